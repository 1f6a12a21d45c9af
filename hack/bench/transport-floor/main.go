// Command transport-floor measures the least CPU any SSH server on this
// machine spends to send a clone's bytes to a loopback client: AES-128-GCM
// sealing of 32 KiB packets (what gitssh offers by default; OpenSSH's sshd
// with OpenSSL's chacha20 is in the same range) and one write(2) per packet
// into a loopback TCP socket, whose receive side the kernel mostly runs on
// the sender's CPU. Nothing else: no git, no pipes, no SSH framing or window.
// The client's reads are another process's CPU, as in the benchmarks: the
// reading end is a child process. It bounds how far under OpenSSH's server
// CPU any server can go in the benchmarks of hack/bench/README.md. Loopback
// only.
//
//	go run ./hack/bench/transport-floor -mib 97 -rounds 5
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

func main() {
	mib := flag.Int("mib", 97, "bytes to send per round, in MiB")
	rounds := flag.Int("rounds", 5, "rounds per variant; medians are printed")
	sink := flag.String("sink", "", "internal: read from this address until EOF (the client)")
	flag.Parse()
	if *sink != "" {
		c, err := net.Dial("tcp", *sink)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, c)
		return
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	client := exec.Command(os.Args[0], "-sink", l.Addr().String())
	client.Stderr = os.Stderr
	if err := client.Start(); err != nil {
		log.Fatal(err)
	}
	conn, err := l.Accept()
	if err != nil {
		log.Fatal(err)
	}
	block, _ := aes.NewCipher(make([]byte, 16))
	gcm, _ := cipher.NewGCM(block)

	const packet = 32 << 10
	plain := make([]byte, packet)
	sealed := make([]byte, 0, packet+gcm.Overhead())
	nonce := make([]byte, gcm.NonceSize())
	total := *mib << 20
	// Only sealing, only writing, then both: CPU of this process, the
	// server (with loopback's receive processing, which the kernel mostly
	// charges to the sender).
	variants := []struct {
		name        string
		seal, write bool
	}{{"AES-128-GCM only", true, false}, {"write(2) only", false, true}, {"both", true, true}}
	results := make([][]time.Duration, len(variants))
	for range *rounds {
		for i, v := range variants {
			before := processCPU()
			for sent := 0; sent < total; sent += packet {
				out := plain
				if v.seal {
					out = gcm.Seal(sealed[:0], nonce, plain, nil)
				}
				if v.write {
					if _, err := conn.Write(out); err != nil {
						log.Fatal(err)
					}
				}
			}
			results[i] = append(results[i], processCPU()-before)
		}
	}
	conn.Close()
	client.Wait()
	for i, v := range variants {
		slices.Sort(results[i])
		med := results[i][len(results[i])/2]
		fmt.Printf("%-18s %4d MiB: median CPU %6.1f ms (%.2f ms/MiB) over %d rounds\n",
			v.name, *mib, float64(med)/1e6, float64(med)/1e6/float64(*mib), *rounds)
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
