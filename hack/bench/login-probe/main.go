// Command login-probe logs in to an SSH server over and over, one login at a
// time at a steady pace, until it gets SIGTERM or SIGINT, then prints how long
// the logins took. hack/bench/ssh-vs-openssh.sh runs it during each fan-out, so
// that the fan-out's table says what a busy server does to the people logging
// in at the same time (issue 13: the timer slack trades CPU against how late
// timers fire and how long a processor waits for a thread stuck in a system
// call; a login's latency under load is where that would show).
//
// A login is what a git client waits for before its first byte of git: TCP
// connect, key exchange and public-key authentication, as golang.org/x/crypto's
// client does them (not the ssh binary, whose own start would be most of the
// figure). The connection is then closed without running anything. Loopback
// only: the host key is not checked.
//
//	go run ./hack/bench/login-probe -addr 127.0.0.1:2222 -key KEY -user git -every 20ms -out ms.txt
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

func main() {
	addr := flag.String("addr", "", "the server, HOST:PORT on loopback")
	keyFile := flag.String("key", "", "OpenSSH private key file to log in with")
	user := flag.String("user", "git", "user to log in as")
	every := flag.Duration("every", 20*time.Millisecond, "start a login this often (the next one at once when one takes longer)")
	out := flag.String("out", "", "append each login's time in milliseconds to this file, one a line")
	flag.Parse()
	if *addr == "" || *keyFile == "" {
		log.Fatal("-addr and -key are required")
	}
	if host, _, err := net.SplitHostPort(*addr); err != nil || !net.ParseIP(host).IsLoopback() {
		log.Fatalf("-addr %q: a loopback HOST:PORT is required", *addr)
	}
	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		log.Fatalf("%s: %v", *keyFile, err)
	}
	config := &ssh.ClientConfig{
		User: *user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// Loopback benchmark against a server started by the same script.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var took []time.Duration
	failures := 0
	var lastErr error
	tick := time.NewTicker(*every)
	defer tick.Stop()
probe:
	for {
		start := time.Now()
		if err := login(*addr, config); err != nil {
			failures++
			lastErr = err
		} else {
			took = append(took, time.Since(start))
		}
		select {
		case <-stop:
			break probe
		case <-tick.C:
		}
	}
	if *out != "" {
		if err := appendMillis(*out, took); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(summary(took, failures))
	if lastErr != nil {
		log.Printf("last failure: %v", lastErr)
	}
}

// login connects, logs in and hangs up.
func login(addr string, config *ssh.ClientConfig) error {
	conn, err := net.DialTimeout("tcp", addr, config.Timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(config.Timeout)); err != nil {
		return err
	}
	client, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	if err != nil {
		return err
	}
	go ssh.DiscardRequests(reqs)
	go func() {
		for c := range chans {
			_ = c.Reject(ssh.Prohibited, "login probe")
		}
	}()
	_ = client.Close()
	return nil
}

func appendMillis(path string, took []time.Duration) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	for _, d := range took {
		fmt.Fprintf(f, "%.3f\n", float64(d)/float64(time.Millisecond))
	}
	return errors.Join(f.Sync(), f.Close())
}

func summary(took []time.Duration, failures int) string {
	if len(took) == 0 {
		return fmt.Sprintf("logins 0, failures %d", failures)
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	ms := func(q float64) string {
		i := int(math.Ceil(q*float64(len(sorted)))) - 1
		return fmt.Sprintf("%.1f", float64(sorted[max(i, 0)])/float64(time.Millisecond))
	}
	return fmt.Sprintf("logins %d, failures %d, ms: p50 %s p90 %s p99 %s max %s", len(sorted), failures, ms(0.5), ms(0.9), ms(0.99), ms(1))
}
