package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/internal/testenv"
)

// scrape reads the metrics endpoint as Prometheus does and returns the series whose
// name starts with prefix by their text-format name, e.g.
// gitssh_ssh_git_commands_total{result="ok",service="upload-pack"}.
func scrape(g Gomega, url, prefix string) map[string]float64 {
	resp, err := http.Get(url)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	series := map[string]float64{}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		g.Expect(err).NotTo(HaveOccurred(), line)
		series[line[:i]] = v
	}
	g.Expect(lines.Err()).NotTo(HaveOccurred())
	return series
}

// The SSH metrics are on the manager's metrics endpoint, and move with real ssh and git
// use: a push, a clone, a missing repository, an unknown key, a wrong user, a shell, a
// port forwarding and an unknown command. No label carries a user, key or address.
func TestMetricsEndpoint(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	var inst *instance
	var metricsAddr string
	testenv.RetryOnAddrInUse(t, func() (err error) {
		metricsAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		inst, err = tryStartGitsshOn(t, ns, t.TempDir(), 0, func(o *app.Options) { o.MetricsAddr = metricsAddr })
		return err
	})
	url := "http://" + metricsAddr + "/metrics"
	alice, stranger := newUserKey(t, "alice"), newUserKey(t, "stranger")
	createKey(t, ns, "alice-laptop", "alice", alice.publicKey)
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	g.Eventually(func() error { _, err := inst.git(alice, "", "ls-remote", inst.url("alice", "api")); return err }).
		WithTimeout(eventually).Should(Succeed())
	before := scrape(g, url, "gitssh_ssh_")

	work := filepath.Join(t.TempDir(), "work")
	for _, args := range [][]string{
		{"init", "-q", "-b", "main", work},
		{"-C", work, "commit", "-q", "--allow-empty", "-m", "first"},
		{"-C", work, "push", "-q", inst.url("alice", "api"), "HEAD:main"},
		{"clone", "-q", inst.url("alice", "api"), filepath.Join(t.TempDir(), "clone")},
	} {
		out, err := inst.git(alice, "", args...)
		g.Expect(err).NotTo(HaveOccurred(), "git %v: %s", args, out)
	}
	out, err := inst.git(alice, "", "ls-remote", inst.url("alice", "missing"))
	g.Expect(err).To(HaveOccurred(), out)
	for _, c := range []struct {
		key    userKey
		args   []string
		status int
	}{
		{stranger, []string{"-T", "git@127.0.0.1"}, 255},
		{alice, []string{"-T", "alice@127.0.0.1"}, 255},
		{alice, []string{"-T", "git@127.0.0.1"}, 1},
		{alice, []string{"-W", "127.0.0.1:1", "git@127.0.0.1"}, 255},
		{alice, []string{"-T", "git@127.0.0.1", "ls"}, 127},
	} {
		cmd := exec.Command("ssh", append(strings.Fields(inst.sshCommand(c.key))[1:], append([]string{"-p", strconv.Itoa(inst.port)}, c.args...)...)...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		g.Expect(code).To(Equal(c.status), "ssh %v: %s", c.args, out)
	}

	want := map[string]float64{
		`gitssh_ssh_connections_accepted_total`:                                             8,
		`gitssh_ssh_connections_closed_total{outcome="authenticated"}`:                      6,
		`gitssh_ssh_connections_closed_total{outcome="refused"}`:                            2,
		`gitssh_ssh_auth_attempts_total{method="publickey",result="accepted"}`:              6,
		`gitssh_ssh_auth_attempts_total{method="publickey",result="unknown_key"}`:           1,
		`gitssh_ssh_auth_attempts_total{method="publickey",result="wrong_user"}`:            1,
		`gitssh_ssh_git_commands_total{result="ok",service="receive-pack"}`:                 1,
		`gitssh_ssh_git_commands_total{result="ok",service="upload-pack"}`:                  1,
		`gitssh_ssh_git_commands_total{result="not_found",service="upload-pack"}`:           1,
		`gitssh_ssh_git_command_duration_seconds_count{service="receive-pack"}`:             1,
		`gitssh_ssh_git_command_duration_seconds_count{service="upload-pack"}`:              1,
		`gitssh_ssh_refused_requests_total{type="shell"}`:                                   1,
		`gitssh_ssh_refused_requests_total{type="port_forwarding"}`:                         1,
		`gitssh_ssh_refused_requests_total{type="unknown_command"}`:                         1,
		`gitssh_ssh_connections_in_flight`:                                                  0,
		`gitssh_ssh_handshakes_in_flight`:                                                   0,
		`gitssh_ssh_sessions_in_flight`:                                                     0,
		`gitssh_ssh_git_commands_total{result="refused",service="upload-pack"}`:             0,
		`gitssh_ssh_connections_closed_total{outcome="limit"}`:                              0,
		`gitssh_ssh_auth_attempts_total{method="publickey",result="weak_key"}`:              0,
		`gitssh_ssh_git_commands_total{result="error",service="upload-archive"}`:            0,
		`gitssh_ssh_pushes_too_large_total`:                                                 0,
		`gitssh_ssh_connections_dropped_total{limit="max_startups_per_source"}`:             0,
		`gitssh_ssh_auth_attempts_total{method="publickey",result="offered_without_proof"}`: 0,
	}
	grow := []string{
		`gitssh_ssh_git_received_bytes_total{service="receive-pack"}`,
		`gitssh_ssh_git_sent_bytes_total{service="upload-pack"}`,
		`gitssh_ssh_git_command_duration_seconds_sum{service="upload-pack"}`,
	}
	g.Eventually(func(g Gomega) {
		now := scrape(g, url, "gitssh_ssh_")
		for series, delta := range want {
			g.Expect(now).To(HaveKey(series))
			g.Expect(now[series]-before[series]).To(Equal(delta), series)
		}
		for _, series := range grow {
			g.Expect(now[series]).To(BeNumerically(">", before[series]), series)
		}
		for series := range now {
			g.Expect(series).NotTo(Or(ContainSubstring("alice"), ContainSubstring("127.0.0.1"), ContainSubstring("SHA256")))
		}
	}).WithTimeout(eventually).Should(Succeed())
}

// --pprof-bind-address serves Go's profiles, for measuring where the memory goes
// (BenchmarkScaleMemory's GITSSH_BENCH_PROFILE_DIR).
func TestPprofEndpoint(t *testing.T) {
	g := NewWithT(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	pprofAddr := l.Addr().String()
	g.Expect(l.Close()).To(Succeed())
	startGitsshOn(t, env.Namespace(t), t.TempDir(), 0, func(o *app.Options) { o.PprofAddr = pprofAddr })
	g.Eventually(func(g Gomega) {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		body, err := io.ReadAll(resp.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(body)).To(ContainSubstring("heap profile:"))
	}).WithTimeout(eventually).Should(Succeed())
}
