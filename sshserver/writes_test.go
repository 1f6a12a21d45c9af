package sshserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
)

// TestGCMWritesJoined: with AES-GCM, each packet of a bulk transfer reaches
// the socket in one write(2) (x/crypto alone makes two), and the bytes arrive
// whole and in order. Write syscalls are counted from /proc/self/io.
func TestGCMWritesJoined(t *testing.T) {
	const packets = 256
	for _, tc := range []struct {
		cipher    string
		maxWrites int // per packet sent, the client's window adjusts included
	}{
		{ssh.CipherAES128GCM, packets * 3 / 2},
		{ssh.CipherAES256GCM, packets * 3 / 2},
		{ssh.CipherChaCha20Poly1305, 0}, // not joined: only the data is checked
	} {
		t.Run(tc.cipher, func(t *testing.T) {
			g := NewWithT(t)
			data := make([]byte, packets*sshPacketPayload)
			rand.Read(data)
			client, server := tcpPair(g)
			sent := make(chan int64, 1)
			go serveBytes(t, server, tc.cipher, data, sent)

			cc, chans, reqs, err := ssh.NewClientConn(client, "", &ssh.ClientConfig{
				Config:          ssh.Config{Ciphers: []string{tc.cipher}},
				User:            "git",
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			})
			g.Expect(err).NotTo(HaveOccurred())
			go ssh.DiscardRequests(reqs)
			go func() {
				for nc := range chans {
					nc.Reject(ssh.Prohibited, "")
				}
			}()
			defer cc.Close() // serveBytes waits for it
			ch, chReqs, err := cc.OpenChannel("session", nil)
			g.Expect(err).NotTo(HaveOccurred())
			go ssh.DiscardRequests(chReqs)
			got, err := io.ReadAll(ch)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(bytes.Equal(got, data)).To(BeTrue(), "the bytes received differ from those sent")
			writes := <-sent
			t.Logf("%d writes", writes)
			if tc.maxWrites > 0 {
				g.Expect(writes).To(BeNumerically("<=", tc.maxWrites), "write syscalls for %d packets", packets)
			}
		})
	}
}

// sshPacketPayload is the Go client's maximum packet payload.
const sshPacketPayload = 32 << 10

// serveBytes runs the server side on nc as conn.serve does, writes data on
// the first channel, sends the count of write syscalls the process made
// meanwhile, and waits for the client to hang up.
func serveBytes(t *testing.T, nc net.Conn, cipher string, data []byte, sent chan<- int64) {
	defer close(sent)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(key)
	cfg := &ssh.ServerConfig{Config: ssh.Config{Ciphers: []string{cipher}}, NoClientAuth: true}
	cfg.AddHostKey(signer)
	conn := &spokeConn{Conn: nc}
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		t.Error(err)
		return
	}
	defer sc.Wait()
	conn.joinGCMWrites(cfg.Ciphers)
	go ssh.DiscardRequests(reqs)
	ch, chReqs, err := (<-chans).Accept()
	if err != nil {
		t.Error(err)
		return
	}
	go ssh.DiscardRequests(chReqs)
	before := writeSyscalls(t)
	for b := data; len(b) > 0; b = b[sshPacketPayload:] {
		if _, err := ch.Write(b[:sshPacketPayload]); err != nil {
			t.Error(err)
			return
		}
	}
	sent <- writeSyscalls(t) - before
	ch.CloseWrite()
	ch.Close()
}

// writeSyscalls is the process's count of write-family syscalls so far.
func writeSyscalls(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/io")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	t.Errorf("no syscw in /proc/self/io: %v", err)
	return 0
}

func tcpPair(g *WithT) (client, server net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	g.Expect(err).NotTo(HaveOccurred())
	server = <-accepted
	g.Expect(server).NotTo(BeNil())
	return client, server
}
