package sshserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// dialFrom connects from a loopback source address (loopback takes any of
// 127/8) and reports whether the server took the connection: it sends its
// version line to one it admitted and closes one it refused at once. The
// connection stays open and silent until the test ends.
func (e *env) dialFrom(ip string) (net.Conn, bool) {
	e.t.Helper()
	return e.dialFromWith(ip, nil)
}

// dialFromWith is dialFrom sending first bytes (a PROXY header) before it
// waits for the server's version line.
func (e *env) dialFromWith(ip string, first []byte) (net.Conn, bool) {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 20 * time.Second}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	if len(first) > 0 {
		if _, err := nc.Write(first); err != nil {
			e.t.Fatal(err)
		}
	}
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	line := make([]byte, len(e.srv.cfg.ServerVersion)+2)
	_, err = io.ReadFull(nc, line)
	switch {
	case err == nil:
		return nc, true
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nc, false
	}
	e.t.Fatalf("neither admitted nor refused: %v", err)
	return nil, false
}

// closedByServer reads what the server sends on nc until it closes the
// connection (EOF, or a reset when our unread bytes were still queued); it
// returns an error if 20 s pass first.
func closedByServer(nc net.Conn) error {
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// attackerIP is the i-th of many loopback sources, none of them the user's 127.0.0.1.
func attackerIP(i int) string { return fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250) }

// The attack measured on issue 10: one address holds 100 connections that
// never send a version line. With the defaults a user elsewhere still gets in
// every time.
func TestNoLockoutByIdleConnections(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	held := 0
	for range 100 {
		if _, ok := e.dialFrom("127.0.0.2"); ok {
			held++
		}
	}
	g.Expect(held).To(Equal(DefaultMaxStartupsPerSource), "the per-source cap refuses the rest")

	for i := range 5 {
		out, err := e.gitAs("alice", e.dir, "ls-remote", e.url("acme/api.git"))
		g.Expect(err).NotTo(HaveOccurred(), "ls-remote %d of 5: %s", i+1, out)
	}
	out, err := e.gitAs("alice", e.dir, "clone", e.url("acme/pub.git"), t.TempDir())
	g.Expect(err).NotTo(HaveOccurred(), out)
}

func TestMaxStartupsPerSource(t *testing.T) {
	e := newEnv(t, Config{MaxStartupsPerSource: 3})
	g := NewWithT(t)
	var held []net.Conn
	for range 3 {
		nc, ok := e.dialFrom("127.0.0.2")
		g.Expect(ok).To(BeTrue())
		held = append(held, nc)
	}
	_, ok := e.dialFrom("127.0.0.2")
	g.Expect(ok).To(BeFalse(), "a fourth handshake from the same source")
	_, ok = e.dialFrom("127.0.0.3")
	g.Expect(ok).To(BeTrue(), "another source")
	stderr, code := e.ssh("alice", "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(1), stderr)

	held[0].Close()
	g.Eventually(func() bool {
		_, ok := e.dialFrom("127.0.0.2")
		return ok
	}, 10*time.Second).Should(BeTrue(), "a closed handshake frees its source's slot")
}

// Past Start the server drops at random, so some connections get in until
// Full; from Full on none do.
func TestMaxStartups(t *testing.T) {
	tests := []struct {
		name string
		ms   MaxStartups
	}{
		{"random early drop", MaxStartups{Start: 2, Rate: 50, Full: 10}},
		{"hard cap", MaxStartups{Start: 4, Rate: 100, Full: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{MaxStartups: tt.ms, MaxStartupsPerSource: -1})
			g := NewWithT(t)
			var admitted []int
			// 400 tries: at 9 held, each gets in with odds 1/16, so reaching
			// Full takes about 44 and failing to within 400 is below 1e-9.
			for i := range 400 {
				if _, ok := e.dialFrom(attackerIP(i)); ok {
					admitted = append(admitted, i)
				}
			}
			g.Expect(admitted).To(HaveLen(tt.ms.Full))
			g.Expect(admitted[:tt.ms.Start]).To(Equal(seq(tt.ms.Start)), "below Start every connection gets in")
			if tt.ms.Full > tt.ms.Start {
				g.Expect(admitted).NotTo(Equal(seq(tt.ms.Full)), "between Start and Full some are dropped")
			}
		})
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestDropProbability(t *testing.T) {
	m := MaxStartups{Start: 10, Rate: 30, Full: 100}
	tests := []struct {
		held int
		want float64
	}{
		{0, 0}, {9, 0}, {10, 0.30}, {55, 0.65}, {99, 0.3 + 0.7*89/90}, {100, 1}, {1000, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.held), func(t *testing.T) {
			NewWithT(t).Expect(m.dropProbability(tt.held)).To(BeNumerically("~", tt.want, 1e-9))
		})
	}
	g := NewWithT(t)
	hard := MaxStartups{Start: 64, Rate: 100, Full: 64}
	g.Expect(hard.dropProbability(63)).To(BeZero())
	g.Expect(hard.dropProbability(64)).To(Equal(1.0))
}

func TestParseMaxStartups(t *testing.T) {
	tests := []struct {
		in      string
		want    MaxStartups
		wantErr string
	}{
		{in: "10:30:100", want: MaxStartups{10, 30, 100}},
		{in: "128:30:512", want: DefaultMaxStartups},
		{in: "64", want: MaxStartups{64, 100, 64}},
		{in: "5:100:5", want: MaxStartups{5, 100, 5}},
		{in: "", wantErr: "start:rate:full"},
		{in: "10:30", wantErr: "start:rate:full"},
		{in: "10:x:100", wantErr: "start:rate:full"},
		{in: "100:30:10", wantErr: "start <= full"},
		{in: "0", wantErr: "start <= full"},
		{in: "10:0:100", wantErr: "rate"},
		{in: "10:101:100", wantErr: "rate"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ParseMaxStartups(tt.in)
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tt.want))
			g.Expect(got.String()).To(Equal(fmt.Sprintf("%d:%d:%d", tt.want.Start, tt.want.Rate, tt.want.Full)))
		})
	}

	_, err := Config{MaxStartups: MaxStartups{Start: 10, Rate: 30}}.withDefaults()
	NewWithT(t).Expect(err).To(MatchError(ContainSubstring("MaxStartups 10:30:0: need 1 <= start <= full")), "a partly set Config field")
}

func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, "203.0.113.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:203.0.113.7"), Port: 1}, "203.0.113.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "pipe"}, "invalid Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.addr.String(), func(t *testing.T) {
			NewWithT(t).Expect(sourceOf(tt.addr).String()).To(Equal(tt.want))
		})
	}
	g := NewWithT(t)
	g.Expect(sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1")})).To(Equal(sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9")})),
		"one /64 is one source")
	g.Expect(sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1")})).NotTo(Equal(netip.Prefix{}))
}

// The login grace time runs from accept: a client that sends nothing, or
// only its version line, is closed when it ends, and its slot is free again.
func TestLoginGraceTime(t *testing.T) {
	const grace = 300 * time.Millisecond
	tests := []struct {
		name  string
		sends string
	}{
		{"silent", ""},
		{"version line only", "SSH-2.0-OpenSSH_9.2\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{LoginGraceTime: grace, MaxStartups: MaxStartups{Start: 1, Rate: 100, Full: 1}})
			g := NewWithT(t)
			start := time.Now()
			nc, ok := e.dialFrom("127.0.0.2")
			g.Expect(ok).To(BeTrue())
			_, err := io.WriteString(nc, tt.sends)
			g.Expect(err).NotTo(HaveOccurred())
			_, ok = e.dialFrom("127.0.0.3")
			g.Expect(ok).To(BeFalse(), "the one handshake slot is taken")

			// The server's key exchange, if any, then EOF.
			g.Expect(closedByServer(nc)).To(Succeed(), "the server must close the connection before our own deadline")
			g.Expect(time.Since(start)).To(BeNumerically(">=", grace))
			g.Eventually(func() bool {
				_, ok := e.dialFrom("127.0.0.3")
				return ok
			}, 10*time.Second).Should(BeTrue(), "the slot is free again")
		})
	}
}

// BenchmarkIdleSources measures a user's odds while one address holds 100
// connections, or many sources each hold one, that never send a version line, with the default limits
// and with the former one global cap (the grace time aside: it is long so the
// connections stay for the whole run). Each iteration is one git ls-remote from 127.0.0.1. Reported:
// held, the handshakes the server took from the sources; success-%, the
// share of ls-remotes that worked; odds-%, what dropProbability promises at
// that count; KiB/held, heap and stacks per held one (the server's and the
// client's side).
//
//	go test -run '^$' -bench IdleSources -benchtime 100x ./sshserver/
func BenchmarkIdleSources(b *testing.B) {
	formerHardCap := Config{MaxStartups: MaxStartups{Start: 64, Rate: 100, Full: 64}, MaxStartupsPerSource: -1}
	oneAddress := func(int) string { return "127.0.0.2" }
	for _, bc := range []struct {
		name  string
		cfg   Config
		conns int
		from  func(i int) string
	}{
		{"defaults/one-address-100-conns", Config{}, 100, oneAddress},
		{"defaults/sources=100", Config{}, 100, attackerIP},
		{"defaults/sources=300", Config{}, 300, attackerIP},
		{"defaults/sources=1000", Config{}, 1000, attackerIP},
		// The one global cap of 64 this replaced.
		{"before/one-address-100-conns", formerHardCap, 100, oneAddress},
		{"before/sources=1000", formerHardCap, 1000, attackerIP},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.cfg.LoginGraceTime = time.Hour
			e := newEnv(b, bc.cfg)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			held := 0
			for i := range bc.conns {
				if _, ok := e.dialFrom(bc.from(i)); ok {
					held++
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			ok := 0
			for b.Loop() {
				if _, err := e.gitAs("alice", e.dir, "ls-remote", e.url("acme/api.git")); err == nil {
					ok++
				}
			}
			b.ReportMetric(float64(held), "held")
			b.ReportMetric(100*float64(ok)/float64(b.N), "success-%")
			b.ReportMetric(100*(1-e.srv.cfg.MaxStartups.dropProbability(held)), "odds-%")
			grown := after.HeapInuse + after.StackInuse - before.HeapInuse - before.StackInuse
			b.ReportMetric(float64(grown)/1024/float64(max(held, 1)), "KiB/held")
		})
	}
}
