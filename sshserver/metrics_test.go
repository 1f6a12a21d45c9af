package sshserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// gather reads every series of reg as Prometheus would scrape it, keyed like
// the text format: name{label="value",...}. A histogram gives name_count and
// name_sum.
func gather(g Gomega, reg prometheus.Gatherer) map[string]float64 {
	families, err := reg.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	series := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string { return f.GetName() + suffix + "{" + strings.Join(labels, ",") + "}" }
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				series[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				series[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				series[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				series[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return series
}

// Series the table below names.
const (
	accepted      = `gitssh_ssh_connections_accepted_total{}`
	inFlight      = `gitssh_ssh_connections_in_flight{}`
	handshaking   = `gitssh_ssh_handshakes_in_flight{}`
	sessionsOpen  = `gitssh_ssh_sessions_in_flight{}`
	tooLargePush  = `gitssh_ssh_pushes_too_large_total{}`
	loginAccepted = `gitssh_ssh_auth_attempts_total{method="publickey",result="accepted"}`
)

func closedAs(outcome string) string {
	return fmt.Sprintf(`gitssh_ssh_connections_closed_total{outcome=%q}`, outcome)
}
func droppedBy(limit dropReason) string {
	return fmt.Sprintf(`gitssh_ssh_connections_dropped_total{limit=%q}`, limit)
}
func auth(method, result string) string {
	return fmt.Sprintf(`gitssh_ssh_auth_attempts_total{method=%q,result=%q}`, method, result)
}
func refused(typ string) string {
	return fmt.Sprintf(`gitssh_ssh_refused_requests_total{type=%q}`, typ)
}
func gitCmd(service, result string) string {
	return fmt.Sprintf(`gitssh_ssh_git_commands_total{result=%q,service=%q}`, result, service)
}
func gitSeries(name, service string) string { return fmt.Sprintf(`%s{service=%q}`, name, service) }

// loggedIn is what one login that ends normally adds.
func loggedIn(n float64) map[string]float64 {
	return map[string]float64{accepted: n, loginAccepted: n, closedAs(outcomeAuthenticated): n}
}

func merge(ms ...map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// Every metric, read from the server's registry after real ssh and git
// actions: each action moves exactly the series it names, by exactly that
// much (bytes and durations: more than zero), and nothing else; every gauge
// is back to 0 once its connections are gone.
func TestMetrics(t *testing.T) {
	e := newEnv(t, Config{
		MaxPushSize: 64 << 10, LoginGraceTime: 3 * time.Second,
		MaxStartupsPerSource: 2, MaxStartups: MaxStartups{Start: 3, Rate: 100, Full: 3},
		// The failed logins below all come from 127.0.0.1; penalties have their own tests.
		PerSourcePenalties: Penalties{Off: true},
	})
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "first")
	pubOnly := filepath.Join(e.dir, "pubonly.pub")
	b, err := os.ReadFile(e.keys["bob"] + ".pub")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	NewWithT(t).Expect(os.WriteFile(pubOnly, b, 0o600)).To(Succeed())
	weak := filepath.Join(e.dir, "id_rsa1024")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", weak).CombinedOutput()
	NewWithT(t).Expect(err).NotTo(HaveOccurred(), string(out))
	e.keys["weak"] = weak
	e.auth.SetKey(authorizer.ObjectRef{Namespace: "default", Name: "weak"}, authorizer.Key{Fingerprint: e.fingerprint("weak"), User: "weak"})

	tests := []struct {
		name   string
		action func(g *WithT)
		want   map[string]float64 // exact increases
		grow   []string           // series that must increase, by any amount
	}{{
		name: "push",
		action: func(g *WithT) {
			out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
			g.Expect(err).NotTo(HaveOccurred(), out)
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("receive-pack", gitOK): 1,
			gitSeries("gitssh_ssh_git_command_duration_seconds_count", "receive-pack"): 1}),
		grow: []string{gitSeries("gitssh_ssh_git_received_bytes_total", "receive-pack"),
			gitSeries("gitssh_ssh_git_sent_bytes_total", "receive-pack"),
			gitSeries("gitssh_ssh_git_command_duration_seconds_sum", "receive-pack")},
	}, {
		name: "clone",
		action: func(g *WithT) {
			out, err := e.gitAs("bob", e.dir, "clone", e.url("acme/api.git"), t.TempDir())
			g.Expect(err).NotTo(HaveOccurred(), out)
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("upload-pack", gitOK): 1,
			gitSeries("gitssh_ssh_git_command_duration_seconds_count", "upload-pack"): 1}),
		grow: []string{gitSeries("gitssh_ssh_git_received_bytes_total", "upload-pack"),
			gitSeries("gitssh_ssh_git_sent_bytes_total", "upload-pack"),
			gitSeries("gitssh_ssh_git_command_duration_seconds_sum", "upload-pack")},
	}, {
		name: "push over the size limit",
		action: func(g *WithT) {
			data := make([]byte, 256<<10)
			rand.Read(data)
			g.Expect(os.WriteFile(filepath.Join(work, "random"), data, 0o644)).To(Succeed())
			e.git(work, "add", "random")
			e.git(work, "commit", "-q", "-m", "large")
			out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
			g.Expect(err).To(HaveOccurred(), out)
			g.Expect(out).To(ContainSubstring("gitssh: push refused"))
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("receive-pack", gitRefused): 1, tooLargePush: 1,
			gitSeries("gitssh_ssh_git_command_duration_seconds_count", "receive-pack"): 1}),
		grow: []string{gitSeries("gitssh_ssh_git_received_bytes_total", "receive-pack"),
			gitSeries("gitssh_ssh_git_sent_bytes_total", "receive-pack"),
			gitSeries("gitssh_ssh_git_command_duration_seconds_sum", "receive-pack")},
	}, {
		name: "missing repository",
		action: func(g *WithT) {
			out, err := e.gitAs("alice", e.dir, "ls-remote", e.url("acme/missing.git"))
			g.Expect(err).To(HaveOccurred(), out)
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("upload-pack", gitNotFound): 1}),
	}, {
		name: "repository denied",
		action: func(g *WithT) {
			out, err := e.gitAs("carol", e.dir, "ls-remote", e.url("acme/api.git"))
			g.Expect(err).To(HaveOccurred(), out)
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("upload-pack", gitRefused): 1}),
	}, {
		name: "malformed repository path",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-T", "git@127.0.0.1", "git-upload-archive '../acme/api.git'")
			g.Expect(code).To(Equal(128))
		},
		want: merge(loggedIn(1), map[string]float64{gitCmd("upload-archive", gitRefused): 1}),
	}, {
		name: "unknown command",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-T", "git@127.0.0.1", "echo", "hi")
			g.Expect(code).To(Equal(127))
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestUnknownCommand): 1}),
	}, {
		name: "shell",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-T", "git@127.0.0.1")
			g.Expect(code).To(Equal(1))
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestShell): 1}),
	}, {
		name: "shell with a terminal",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-tt", "git@127.0.0.1")
			g.Expect(code).To(Equal(1))
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestShell): 1, refused(requestPty): 1}),
	}, {
		name: "subsystem",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-s", "git@127.0.0.1", "sftp")
			g.Expect(code).NotTo(Equal(0))
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestSubsystem): 1}),
	}, {
		name: "port forwarding, local and remote",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-W", "127.0.0.1:1", "git@127.0.0.1")
			g.Expect(code).To(Equal(255))
			_, code = e.ssh("alice", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:1", "git@127.0.0.1")
			g.Expect(code).To(Equal(255))
		},
		want: merge(loggedIn(2), map[string]float64{refused(requestPortForwarding): 2}),
	}, {
		name: "X11 and agent forwarding",
		action: func(g *WithT) {
			c, err := e.client("alice")
			g.Expect(err).NotTo(HaveOccurred())
			defer c.Close()
			s, err := c.NewSession()
			g.Expect(err).NotTo(HaveOccurred())
			defer s.Close()
			g.Expect(s.SendRequest("auth-agent-req@openssh.com", true, nil)).To(BeFalse())
			g.Expect(s.SendRequest("x11-req", true, ssh.Marshal(struct {
				Single        bool
				Proto, Cookie string
				Screen        uint32
			}{false, "MIT-MAGIC-COOKIE-1", "00", 0}))).To(BeFalse())
			g.Expect(s.Setenv("LANG", "C")).NotTo(Succeed(), "refused but not counted")
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestAgent): 1, refused(requestX11): 1}),
	}, {
		name: "unknown key",
		action: func(g *WithT) {
			_, code := e.ssh("stranger", "-T", "git@127.0.0.1")
			g.Expect(code).To(Equal(255))
		},
		want: map[string]float64{accepted: 1, auth("publickey", authUnknownKey): 1, closedAs(outcomeRefused): 1},
	}, {
		name: "wrong user",
		action: func(g *WithT) {
			_, code := e.ssh("alice", "-T", "alice@127.0.0.1")
			g.Expect(code).To(Equal(255))
		},
		want: map[string]float64{accepted: 1, auth("publickey", authWrongUser): 1, closedAs(outcomeRefused): 1},
	}, {
		name: "weak key",
		action: func(g *WithT) {
			_, code := e.ssh("weak", "-T", "git@127.0.0.1")
			g.Expect(code).To(Equal(255))
		},
		want: map[string]float64{accepted: 1, auth("publickey", authWeakKey): 1, closedAs(outcomeRefused): 1},
	}, {
		name: "a key offered without proof, then one signed for",
		action: func(g *WithT) {
			_, code := e.ssh("", "-i", pubOnly, "-i", e.keys["alice"], "-T", "git@127.0.0.1")
			g.Expect(code).To(Equal(1))
		},
		want: merge(loggedIn(1), map[string]float64{refused(requestShell): 1, auth("publickey", authOfferedWithoutProof): 1}),
	}, {
		name: "handshake cut short",
		action: func(g *WithT) {
			nc, err := net.Dial("tcp", e.addr)
			g.Expect(err).NotTo(HaveOccurred())
			fmt.Fprintf(nc, "SSH-2.0-test\r\nnot a key exchange\r\n")
			nc.Close()
		},
		want: map[string]float64{accepted: 1, closedAs(outcomeHandshakeFailed): 1},
	}, {
		name: "login grace time",
		action: func(g *WithT) {
			nc, ok := e.dialFrom("127.0.0.5")
			g.Expect(ok).To(BeTrue())
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, nc)
			g.Expect(err).NotTo(HaveOccurred(), "closed by the server, not by our deadline")
		},
		want: map[string]float64{accepted: 1, closedAs(outcomeTimeout): 1},
	}, {
		name: "per-source and MaxStartups limits",
		action: func(g *WithT) {
			var held []net.Conn
			for _, ip := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
				nc, ok := e.dialFrom(ip)
				g.Expect(ok).To(BeTrue(), ip)
				held = append(held, nc)
			}
			_, ok := e.dialFrom("127.0.0.2")
			g.Expect(ok).To(BeFalse(), "a third handshake from one source")
			_, ok = e.dialFrom("127.0.0.4")
			g.Expect(ok).To(BeFalse(), "a fourth handshake in all")
			for _, nc := range held {
				nc.Close()
			}
		},
		want: map[string]float64{accepted: 5, closedAs(outcomeHandshakeFailed): 3, closedAs(outcomeLimit): 2,
			droppedBy(dropMaxStartupsPerSource): 1, droppedBy(dropMaxStartups): 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			before := gather(g, e.reg)
			tt.action(g)
			g.Eventually(func(g Gomega) {
				now := gather(g, e.reg)
				for _, gauge := range []string{inFlight, handshaking, sessionsOpen} {
					g.Expect(now).To(HaveKeyWithValue(gauge, 0.0), "every connection is gone")
				}
				for series, v := range now {
					if slices.Contains(tt.grow, series) {
						g.Expect(v).To(BeNumerically(">", before[series]), series)
					} else {
						g.Expect(v-before[series]).To(Equal(tt.want[series]), series)
					}
				}
				for series := range tt.want {
					g.Expect(now).To(HaveKey(series))
				}
			}, 15*time.Second, 50*time.Millisecond).Should(Succeed())
		})
	}
}

// Clients skip methods the server does not list (publickey only), so
// password guessing is seen only from scanners; the classification, then,
// without a client.
func TestAuthAttemptResults(t *testing.T) {
	tests := []struct {
		method string
		err    error
		want   string // "" when not counted
	}{
		{"none", errors.New("ssh: no auth passed yet"), ""},
		{"publickey", nil, auth("publickey", authAccepted)},
		{"publickey", errWrongUser, auth("publickey", authWrongUser)},
		{"publickey", errUnknownKey, auth("publickey", authUnknownKey)},
		{"publickey", errKeyRevoked, auth("publickey", authRevoked)},
		{"publickey", CheckClientKey(&ssh.Certificate{}), auth("publickey", authWeakKey)},
		{"publickey", certificateRefusal{errors.New("its CA is not trusted")}, auth("publickey", authCertificateRefused)},
		{"publickey", errors.New(`ssh: algorithm "ssh-rsa" not accepted`), auth("publickey", authWeakKey)},
		{"password", errors.New("ssh: password auth not configured"), auth("password", authMethodNotAllowed)},
		{"keyboard-interactive", errors.New("not configured"), auth("keyboard-interactive", authMethodNotAllowed)},
		{"gssapi-with-mic", errors.New("not configured"), auth("other", authMethodNotAllowed)},
		{"made-up", errors.New("unknown method"), auth("other", authMethodNotAllowed)},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %v", tt.method, tt.err), func(t *testing.T) {
			g := NewWithT(t)
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			before := gather(g, reg)
			m.authAttempt(tt.method, tt.err)
			for series, v := range gather(g, reg) {
				want := 0.0
				if series == tt.want {
					want = 1
				}
				g.Expect(v-before[series]).To(Equal(want), series)
			}
		})
	}
}

// Two servers in one process share controller-runtime's registry: the
// second NewMetrics uses the first one's collectors instead of failing.
func TestNewMetricsTwice(t *testing.T) {
	g := NewWithT(t)
	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	a.accepted()
	b.accepted()
	g.Expect(testutil.ToFloat64(a.connsAccepted)).To(Equal(2.0))
	n, err := testutil.GatherAndCount(reg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(BeNumerically(">", 50), "every series exists from the start")
	g.Expect(testutil.GatherAndLint(reg)).To(BeEmpty())
}

// A server without metrics (Config.Metrics nil) counts nothing, and nothing panics.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.accepted()
	m.dropped(dropMaxConns)
	m.admitted()
	m.handshakeDone()
	m.closed(outcomeAuthenticated)
	m.sessionStarted()
	m.sessionEnded()
	m.authAttempt("publickey", errors.New("x"))
	m.offeredWithoutProof()
	m.requestRefused(requestShell)
	m.gitCommand(UploadPack, gitRun{result: gitOK, ran: true})
	m.pushTooLarge()
}

// BenchmarkLoginsMetrics: logins per second and the p99 time of one login (TCP connect,
// key exchange, public-key authentication) through a real server on 127.0.0.1, with the
// Go client, 4 at a time, without and with metrics. Run it with -count to compare:
//
//	go test -run '^$' -bench LoginsMetrics -benchtime 3000x -count 5 ./sshserver/
func BenchmarkLoginsMetrics(b *testing.B) {
	e := newEnv(b, Config{})
	signer := e.signer("alice")
	for _, mode := range []string{"metrics=off", "metrics=on"} {
		b.Run(mode, func(b *testing.B) {
			// Only the handshake limits would otherwise cap 4 parallel clients.
			cfg := Config{MaxStartupsPerSource: -1}
			if mode == "metrics=on" {
				cfg.Metrics = NewMetrics(prometheus.NewRegistry())
			}
			srv, err := New(cfg, hostSigners, e.auth, nil, logr.Discard())
			if err != nil {
				b.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(l)
			defer srv.Shutdown(context.Background())
			client := &ssh.ClientConfig{User: "git", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second}

			var mu sync.Mutex
			var took []time.Duration
			b.SetParallelism(2) // 2 × GOMAXPROCS (2 here): 4 clients
			cpu0 := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					start := time.Now()
					c, err := ssh.Dial("tcp", l.Addr().String(), client)
					if err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
					c.Close()
				}
				mu.Lock()
				took = append(took, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			cpu := processCPU() - cpu0
			slices.Sort(took)
			// CPU of client and server together: steadier than wall time on a shared machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/login")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMetricsPerLogin: the metric updates one login makes (accepted, admitted, one
// auth attempt, handshake done, closed), against a login's own CPU cost in
// BenchmarkLoginsMetrics.
func BenchmarkMetricsPerLogin(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.accepted()
			m.admitted()
			m.authAttempt("publickey", nil)
			m.handshakeDone()
			m.closed(outcomeAuthenticated)
		}
	})
}
