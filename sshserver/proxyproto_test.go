package sshserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/pires/go-proxyproto"

	"github.com/gitssh-dev/gitssh/internal/hostkeys"
)

func proxyHeadersRefused(reason string) string {
	return fmt.Sprintf(`gitssh_ssh_proxy_headers_refused_total{reason=%q}`, reason)
}

// proxyHeader is what a relay sends first: a PROXY header of the given
// version (1 or 2) for a client at src, or raw bytes.
func proxyHeader(t testing.TB, version byte, src string) []byte {
	t.Helper()
	dst := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 22}
	if strings.Contains(src, ":") {
		dst.IP = net.ParseIP("::1")
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, &net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// relay is a load balancer in the test: it listens on 127.0.0.1, dials the
// server from the address from for each connection, sends header and then
// copies both ways. It returns its port, for ssh -p.
func (e *env) relay(from string, header []byte) string {
	e.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
				out, err := d.Dial("tcp", e.addr)
				if err != nil {
					return
				}
				defer out.Close()
				if _, err := out.Write(header); err != nil {
					return
				}
				go func() {
					io.Copy(out, in)
					out.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(in, out)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	f, err := os.OpenFile(e.known, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write(hostkeys.KnownHosts("[127.0.0.1]:"+port, hostSigners))
		f.Close()
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return port
}

// sshTo runs the OpenSSH client on port with the given keys, in that order;
// it returns stderr and the exit code (1: logged in, shell refused; 255:
// connection or login failed).
func (e *env) sshTo(port string, keys []string, extra ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var args []string
	for _, k := range keys {
		args = append(args, "-i", k)
	}
	args = append(args, "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile="+e.known, "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20", "-p", port)
	args = append(append(args, extra...), "-T", "git@127.0.0.1")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stderr.String(), ee.ExitCode()
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return stderr.String(), 0
}

func TestProxyProtocol(t *testing.T) {
	const loggedIn, failed = 1, 255
	trusted := CIDRs{netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name   string
		mode   ProxyProtocol
		from   string // the relay's address, as the server sees it
		header func(t testing.TB) []byte
		code   int
		log    []string // in the server's "Accepted login" or "Refused connection" line
		metric string   // the reason of gitssh_ssh_proxy_headers_refused_total counted, if any
	}{
		{"v1", ProxyProtocolOptional, "127.0.0.1", func(t testing.TB) []byte { return proxyHeader(t, 1, "203.0.113.7") },
			loggedIn, []string{`"msg"="Accepted login"`, `"remote"="203.0.113.7:40000"`, `"peer"="127.0.0.1:`}, ""},
		{"v2", ProxyProtocolRequired, "127.0.0.1", func(t testing.TB) []byte { return proxyHeader(t, 2, "203.0.113.8") },
			loggedIn, []string{`"msg"="Accepted login"`, `"remote"="203.0.113.8:40000"`}, ""},
		{"v2 IPv6", ProxyProtocolRequired, "127.0.0.1", func(t testing.TB) []byte { return proxyHeader(t, 2, "2001:db8::8") },
			loggedIn, []string{`"msg"="Accepted login"`, `"remote"="[2001:db8::8]:40000"`}, ""},
		{"absent, optional", ProxyProtocolOptional, "127.0.0.1", func(testing.TB) []byte { return nil },
			loggedIn, []string{`"msg"="Accepted login"`, `"remote"="127.0.0.1:`}, ""},
		{"absent, required", ProxyProtocolRequired, "127.0.0.1", func(testing.TB) []byte { return nil },
			failed, []string{`"msg"="Refused connection"`, `"reason"="no PROXY protocol header"`, `"remote"="127.0.0.1:`}, "missing"},
		{"malformed", ProxyProtocolOptional, "127.0.0.1", func(testing.TB) []byte { return []byte("PROXY TCP4 203.0.113.7 nonsense\r\n") },
			failed, []string{`"msg"="Refused connection"`, `"reason"="malformed PROXY protocol header"`}, "malformed"},
		{"spoofed from an untrusted address", ProxyProtocolOptional, "127.0.0.2", func(t testing.TB) []byte { return proxyHeader(t, 1, "203.0.113.9") },
			failed, []string{`"msg"="Refused connection"`, `"reason"="PROXY protocol header from an address outside the trusted CIDRs"`, `"remote"="127.0.0.2:`}, "untrusted"},
		{"spoofed v2 from an untrusted address", ProxyProtocolRequired, "127.0.0.2", func(t testing.TB) []byte { return proxyHeader(t, 2, "203.0.113.9") },
			failed, []string{`"msg"="Refused connection"`, `"reason"="PROXY protocol header from an address outside the trusted CIDRs"`}, "untrusted"},
		{"untrusted without header, optional", ProxyProtocolOptional, "127.0.0.2", func(testing.TB) []byte { return nil },
			loggedIn, []string{`"msg"="Accepted login"`, `"remote"="127.0.0.2:`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{ProxyProtocol: tt.mode, ProxyProtocolTrustedCIDRs: trusted})
			g := NewWithT(t)
			port := e.relay(tt.from, tt.header(t))
			stderr, code := e.sshTo(port, []string{e.keys["alice"]})
			g.Expect(code).To(Equal(tt.code), stderr)
			g.Eventually(func() []string { return e.logs.with(tt.log...) }, 10*time.Second).ShouldNot(BeEmpty(),
				"no server log line with %q", tt.log)
			g.Eventually(func(g Gomega) {
				metrics := gather(g, e.reg)
				for _, r := range proxyHeaderRefusals {
					want := 0.0
					if r == tt.metric {
						want = 1
					}
					g.Expect(metrics).To(HaveKeyWithValue(proxyHeadersRefused(r), want))
				}
				if tt.metric != "" {
					g.Expect(metrics).To(HaveKeyWithValue(droppedBy(dropProxyHeader), 1.0))
					g.Expect(metrics).To(HaveKeyWithValue(closedAs(outcomeLimit), 1.0))
				}
			}, 10*time.Second).Should(Succeed())
		})
	}
}

// A header's address is the one the per-source limits and penalties count:
// every connection comes from the relay on 127.0.0.1, yet each client
// address has its own handshake slots and its own penalty.
func TestProxyProtocolSourceLimits(t *testing.T) {
	e := newEnv(t, Config{
		ProxyProtocol: ProxyProtocolRequired, ProxyProtocolTrustedCIDRs: CIDRs{netip.MustParsePrefix("127.0.0.0/8")},
		MaxStartupsPerSource: 2,
		PerSourcePenalties:   Penalties{AuthFail: 5 * time.Second, NoAuth: time.Second, Min: 15 * time.Second, Max: time.Minute},
	})
	g := NewWithT(t)
	held := func(src string) bool {
		_, ok := e.dialFromWith("127.0.0.1", proxyHeader(t, 2, src))
		return ok
	}
	g.Expect(held("198.51.100.1")).To(BeTrue())
	g.Expect(held("198.51.100.1")).To(BeTrue())
	g.Expect(held("198.51.100.1")).To(BeFalse(), "a third handshake from the header's address")
	g.Expect(held("198.51.100.2")).To(BeTrue(), "another client behind the same relay")
	g.Expect(e.logs.with(`"limit"="max_startups_per_source"`, `"remote"="198.51.100.1:40000"`)).NotTo(BeEmpty())

	attacker := e.relay("127.0.0.1", proxyHeader(t, 1, "198.51.100.66"))
	for i := range 3 {
		stderr, code := e.sshTo(attacker, []string{e.keys["stranger"]})
		g.Expect(code).To(Equal(255), "attempt %d: %s", i+1, stderr)
		e.waitServed(g, 3) // the held handshakes above
	}
	_, code := e.sshTo(attacker, []string{e.keys["alice"]})
	g.Expect(code).To(Equal(255), "the penalised address is refused even with a registered key")
	g.Expect(e.logs.with(`"msg"="Penalised source for failed logins"`, `"source"="198.51.100.66/32"`)).To(HaveLen(1))
	g.Expect(e.logs.with(`"msg"="Refused key offered without proof"`)).To(BeEmpty())

	user := e.relay("127.0.0.1", proxyHeader(t, 1, "198.51.100.7"))
	stderr, code := e.sshTo(user, []string{e.keys["alice"]})
	g.Expect(code).To(Equal(1), "another client behind the same relay: %s", stderr)
}

// Relays that connect and send nothing hold only their own connections: the
// header is read on each connection's goroutine, so a client behind a
// working relay logs in while they wait, and the login grace time closes them.
func TestProxyHeaderReadWithinGraceTime(t *testing.T) {
	e := newEnv(t, Config{ProxyProtocol: ProxyProtocolRequired, ProxyProtocolTrustedCIDRs: CIDRs{netip.MustParsePrefix("127.0.0.0/8")},
		LoginGraceTime: 3 * time.Second})
	g := NewWithT(t)
	var silent []net.Conn
	for range 3 {
		nc, err := net.Dial("tcp", e.addr)
		g.Expect(err).NotTo(HaveOccurred())
		defer nc.Close()
		silent = append(silent, nc)
	}
	stderr, code := e.sshTo(e.relay("127.0.0.1", proxyHeader(t, 2, "203.0.113.7")), []string{e.keys["alice"]})
	g.Expect(code).To(Equal(1), stderr)
	for i, nc := range silent {
		nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := nc.Read(make([]byte, 1))
		var ne net.Error
		g.Expect(errors.As(err, &ne) && ne.Timeout()).To(BeTrue(), "silent connection %d is still waiting for its header: %v", i, err)
	}
	for i, nc := range silent {
		g.Expect(closedByServer(nc)).To(Succeed(), "silent connection %d is closed at the grace time", i)
	}
	g.Eventually(func() []string {
		return e.logs.with(`"msg"="Refused connection"`, `"reason"="no PROXY protocol header within the login grace time"`)
	}).Should(HaveLen(3))
	g.Expect(gather(g, e.reg)).To(HaveKeyWithValue(proxyHeadersRefused("timeout"), 3.0))
}

func TestProxyProtocolConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"off by default", Config{}, ""},
		{"optional with trusted CIDRs", Config{ProxyProtocol: ProxyProtocolOptional, ProxyProtocolTrustedCIDRs: CIDRs{netip.MustParsePrefix("10.0.0.0/8")}}, ""},
		{"required without trusted CIDRs", Config{ProxyProtocol: ProxyProtocolRequired}, "ProxyProtocol required needs ProxyProtocolTrustedCIDRs"},
		{"an unknown mode", Config{ProxyProtocol: "on"}, `"on" is not off, optional or required`},
		{"penalties with min above max", Config{PerSourcePenalties: Penalties{Min: time.Hour, Max: time.Minute}}, "PerSourcePenalties"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := tt.cfg.withDefaults()
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.PerSourcePenalties).To(Equal(DefaultPenalties))
			g.Expect(got.PenaltyMaxSources).To(Equal(DefaultPenaltyMaxSources))
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "", want: ""},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8, 2001:db8::1/32 ,", want: "10.0.0.0/8,2001:db8::/32"},
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "::ffff:192.0.2.7", want: "192.0.2.7/32"},
		{in: "lb.example.com", wantErr: `"lb.example.com" is not a CIDR`},
		{in: "10.0.0.0/33", wantErr: `"10.0.0.0/33" is not a CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g := NewWithT(t)
			var c CIDRs
			err := c.UnmarshalText([]byte(tt.in))
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(c.String()).To(Equal(tt.want))
		})
	}
	g := NewWithT(t)
	c := CIDRs{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	g.Expect(c.Contains(&net.TCPAddr{IP: net.ParseIP("10.9.8.7")})).To(BeTrue())
	g.Expect(c.Contains(&net.TCPAddr{IP: net.ParseIP("::ffff:10.9.8.7")})).To(BeTrue(), "IPv4-mapped")
	g.Expect(c.Contains(&net.TCPAddr{IP: net.ParseIP("2001:db8:5::1")})).To(BeTrue())
	g.Expect(c.Contains(&net.TCPAddr{IP: net.ParseIP("11.0.0.1")})).To(BeFalse())
	g.Expect(c.Contains(&net.UnixAddr{Name: "sock"})).To(BeFalse())
}
