package sshserver

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

const penalisedGauge = `gitssh_ssh_penalised_sources{}`

// clock is a fake time for the penalty table.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func testBox(exempt CIDRs, max int) (*penaltyBox, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newPenaltyBox(Penalties{AuthFail: 5 * time.Second, NoAuth: time.Second, Min: 15 * time.Second, Max: 2 * time.Minute}, exempt, max)
	b.now = c.now
	return b, c
}

var (
	srcA = netip.MustParsePrefix("203.0.113.1/32")
	srcB = netip.MustParsePrefix("203.0.113.2/32")
)

func TestPenaltyEscalation(t *testing.T) {
	g := NewWithT(t)
	b, clk := testBox(nil, 100)

	// Below min: delayed by a tenth of the penalty, not refused.
	g.Expect(b.penalise(srcA, failedAuth)).To(BeZero())
	delay, refused := b.check(srcA)
	g.Expect(delay).To(Equal(500 * time.Millisecond))
	g.Expect(refused).To(BeZero())
	g.Expect(b.penalise(srcA, failedAuth)).To(BeZero())
	g.Expect(b.check(srcA)).To(Equal(time.Second))

	// Each block is twice the last, up to max.
	for i, want := range []time.Duration{15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 2 * time.Minute} {
		if i > 0 {
			b.penalise(srcA, failedAuth)
			b.penalise(srcA, failedAuth)
		}
		g.Expect(b.penalise(srcA, failedAuth)).To(Equal(want), "block %d", i+1)
		_, refused := b.check(srcA)
		g.Expect(refused).To(Equal(want))
		g.Expect(b.refusing()).To(Equal(1))
		g.Expect(b.penalise(srcA, failedAuth)).To(BeZero(), "a failure while blocked adds nothing")
		clk.advance(want - time.Second)
		_, refused = b.check(srcA)
		g.Expect(refused).To(Equal(time.Second))
		clk.advance(time.Second)
		g.Expect(b.check(srcA)).To(BeZero(), "served its time: no delay either")
	}
	g.Expect(b.check(srcB)).To(BeZero(), "another source")

	// Quiet for max: forgiven, the next block is min again.
	clk.advance(2*time.Minute + time.Second)
	for range 2 {
		b.penalise(srcA, failedAuth)
	}
	g.Expect(b.penalise(srcA, failedAuth)).To(Equal(15 * time.Second))
}

func TestPenaltyNoAuthWeighsLess(t *testing.T) {
	g := NewWithT(t)
	b, _ := testBox(nil, 100)
	for i := range 14 {
		g.Expect(b.penalise(srcA, failedNoAuth)).To(BeZero(), "noauth %d", i+1)
	}
	g.Expect(b.penalise(srcA, failedNoAuth)).To(Equal(15 * time.Second))
}

func TestPenaltyExempt(t *testing.T) {
	g := NewWithT(t)
	b, _ := testBox(CIDRs{netip.MustParsePrefix("203.0.113.0/24")}, 100)
	for range 10 {
		b.penalise(srcA, failedAuth)
	}
	g.Expect(b.check(srcA)).To(BeZero())
	g.Expect(b.len()).To(BeZero(), "an exempt source takes no entry")
}

// The table never holds more than max sources; the one penalised longest
// ago goes first, and a blocked source stays blocked while it keeps failing.
func TestPenaltyTableBounded(t *testing.T) {
	g := NewWithT(t)
	b, _ := testBox(nil, 1000)
	for range 3 {
		b.penalise(srcA, failedAuth)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 100_000 {
		b.penalise(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), failedNoAuth)
		if i%500 == 0 {
			b.penalise(srcA, failedAuth) // the attacker keeps failing
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	g.Expect(b.len()).To(Equal(1000))
	_, refused := b.check(srcA)
	g.Expect(refused).To(BeNumerically(">", 0), "recently active, so kept")
	g.Expect(b.check(netip.MustParsePrefix("10.0.0.1/32"))).To(BeZero(), "evicted")
	g.Expect(int64(after.HeapInuse)-int64(before.HeapInuse)).To(BeNumerically("<", 1<<20), "1000 entries, not 100,000")
}

func TestParsePenalties(t *testing.T) {
	tests := []struct {
		in      string
		want    Penalties
		wantErr string
	}{
		{in: "authfail:5s,noauth:1s,min:15s,max:10m0s", want: DefaultPenalties},
		{in: "", want: DefaultPenalties},
		{in: "max:1h", want: Penalties{AuthFail: 5 * time.Second, NoAuth: time.Second, Min: 15 * time.Second, Max: time.Hour}},
		{in: "noauth:0s", want: Penalties{AuthFail: 5 * time.Second, Min: 15 * time.Second, Max: 10 * time.Minute}},
		{in: "off", want: Penalties{Off: true}},
		{in: "authfail", wantErr: "not off or a list"},
		{in: "authfail:5", wantErr: "not off or a list"},
		{in: "crash:90s", wantErr: `unknown key "crash"`},
		{in: "min:1m,max:30s", wantErr: "0 < min <= max"},
		{in: "authfail:-1s", wantErr: "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g := NewWithT(t)
			var got Penalties
			err := got.UnmarshalText([]byte(tt.in))
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tt.want))
			var again Penalties
			g.Expect(again.UnmarshalText([]byte(got.String()))).To(Succeed())
			g.Expect(again).To(Equal(got), "String reads back")
		})
	}
}

// waitServed waits until the server has finished every connection but the
// open ones: x/crypto hangs up on a failed handshake before the server counts
// the failure.
func (e *env) waitServed(g *WithT, open int) {
	g.Eventually(func() int {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.conns)
	}, 10*time.Second).Should(Equal(open))
}

// Real ssh from 127.0.0.2 with an unregistered key: refused at connect once
// its penalty reaches min, even with a registered key; 127.0.0.1 is not
// touched, and an exempt address is never refused.
func TestPenaltiesRefuseRepeatedFailures(t *testing.T) {
	pen := Penalties{AuthFail: 5 * time.Second, NoAuth: time.Second, Min: 15 * time.Second, Max: time.Minute}
	e := newEnv(t, Config{PerSourcePenalties: pen, PenaltyExemptCIDRs: CIDRs{netip.MustParsePrefix("127.0.0.3/32")}})
	g := NewWithT(t)
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		for i := range 3 {
			stderr, code := e.sshTo(e.port, []string{e.keys["stranger"]}, "-b", from)
			g.Expect(code).To(Equal(255), "%s attempt %d: %s", from, i+1, stderr)
			g.Expect(stderr).To(ContainSubstring("Permission denied"), "%s attempt %d", from, i+1)
			e.waitServed(g, 0)
		}
	}
	stderr, code := e.sshTo(e.port, []string{e.keys["alice"]}, "-b", "127.0.0.2")
	g.Expect(code).To(Equal(255), stderr)
	g.Expect(stderr).NotTo(ContainSubstring("Permission denied"), "closed before the handshake")
	g.Expect(e.logs.with(`"msg"="Penalised source for failed logins"`, `"source"="127.0.0.2/32"`, `"failure"="authfail"`, `"refusedFor"="15s"`)).To(HaveLen(1))
	g.Expect(e.logs.with(`"msg"="Delayed handshake for earlier failed logins"`, `"remote"="127.0.0.2:`)).To(HaveLen(2), "the second and third attempts wait 0.5s and 1s")
	g.Expect(e.logs.with(`"msg"="Delayed handshake for earlier failed logins"`, `"remote"="127.0.0.2:`, `"delay"="1s"`)).To(HaveLen(1))
	g.Expect(e.logs.with(`"msg"="Delayed handshake for earlier failed logins"`, `"remote"="127.0.0.3:`)).To(BeEmpty(), "exempt")
	g.Expect(e.logs.with(`"msg"="Refused connection"`, `"remote"="127.0.0.2:`, `"limit"="penalty"`)).To(HaveLen(1))
	metrics := gather(g, e.reg)
	g.Expect(metrics).To(HaveKeyWithValue(penalisedGauge, 1.0))
	g.Expect(metrics).To(HaveKeyWithValue(droppedBy(dropPenalised), 1.0))

	stderr, code = e.sshTo(e.port, []string{e.keys["alice"]}, "-b", "127.0.0.3")
	g.Expect(code).To(Equal(1), "exempt: %s", stderr)
	stderr, code = e.sshTo(e.port, []string{e.keys["alice"]})
	g.Expect(code).To(Equal(1), "another address: %s", stderr)
}

// A user whose agent holds five other keys before the registered one logs in
// every time: refused keys in a connection that then logs in are not a
// failure. Ten logins: enough to be blocked three times over if they were.
func TestPenaltiesSpareSeveralKeys(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	var keys []string
	for i := range 5 {
		keys = append(keys, e.sshKeygen(fmt.Sprintf("other%d", i)))
	}
	keys = append(keys, e.keys["alice"])
	for i := range 10 {
		stderr, code := e.sshTo(e.port, keys, "-v")
		g.Expect(code).To(Equal(1), "login %d: %s", i+1, stderr)
		g.Expect(stderr).To(ContainSubstring("Authenticated to 127.0.0.1"))
	}
	g.Expect(e.logs.with(`"msg"="Penalised source`)).To(BeEmpty())
	_, refused := e.srv.penalties.check(netip.MustParsePrefix("127.0.0.1/32"))
	g.Expect(refused).To(BeZero())
	g.Expect(gather(g, e.reg)).To(HaveKeyWithValue(penalisedGauge, 0.0))
}

// A connection that speaks SSH and hangs up without trying to log in (a
// scanner, ssh-keyscan) is a noauth failure; one that sends nothing at all (a
// TCP health check through kube-proxy, from a node's address) is not counted.
func TestPenaltiesNoAuth(t *testing.T) {
	e := newEnv(t, Config{PerSourcePenalties: Penalties{AuthFail: 5 * time.Second, NoAuth: 5 * time.Second, Min: 15 * time.Second, Max: time.Minute}})
	g := NewWithT(t)
	hangUp := func(from, send string) bool {
		nc, ok := e.dialFrom(from)
		if ok {
			_, err := nc.Write([]byte(send))
			g.Expect(err).NotTo(HaveOccurred())
			nc.(*net.TCPConn).CloseWrite()
			nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			io.Copy(io.Discard, nc)
		}
		nc.Close()
		e.waitServed(g, 0)
		return ok
	}
	for i := range 10 {
		g.Expect(hangUp("127.0.0.2", "")).To(BeTrue(), "silent connection %d", i+1)
	}
	for i := range 3 {
		g.Expect(hangUp("127.0.0.4", "SSH-2.0-scanner\r\n")).To(BeTrue(), "scanner connection %d", i+1)
	}
	g.Expect(hangUp("127.0.0.4", "SSH-2.0-scanner\r\n")).To(BeFalse(), "the scanner is refused")
	g.Expect(e.logs.with(`"msg"="Penalised source for failed logins"`, `"source"="127.0.0.4/32"`, `"failure"="noauth"`)).To(HaveLen(1))
	g.Expect(e.logs.with(`"msg"="Penalised source`, `"source"="127.0.0.2/32"`)).To(BeEmpty())
}
