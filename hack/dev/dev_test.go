/*
Copyright 2026 The gitssh Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gitssh-dev/gitssh/internal/testenv"
)

const (
	readyTimeout = 3 * time.Minute
	exitTimeout  = 60 * time.Second
)

// TestMakeDev runs the dev environment the way `make dev` does (the same binary, built
// from ./hack/dev), in a temporary .dev directory: it runs the printed kubectl and git
// clone commands, pushes a commit, stops it with SIGINT as Ctrl-C would, and runs it
// again to find the same host key (the first run's known_hosts, strictly checked) and
// the pushed commit; then kills it (SIGKILL) and checks that a third run stops the
// control plane left behind and serves the same. The first run takes a gitssh flag from
// DEV_ARGS and prints METRICS_URL, where the SSH metrics are.
func TestMakeDev(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to check that the control plane processes are gone")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		out, err := exec.Command(filepath.Join(root, "hack", "setup-envtest.sh")).Output()
		if err != nil {
			t.Fatalf("hack/setup-envtest.sh: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		assets = lines[len(lines)-1]
	}
	bin := filepath.Join(t.TempDir(), "gitssh-dev")
	build := exec.Command("go", "build", "-o", bin, "./hack/dev")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./hack/dev: %v\n%s", err, out)
	}

	devDir := t.TempDir()
	work := t.TempDir()
	gitEnv := append(os.Environ(),
		"HOME="+work, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Demo", "GIT_AUTHOR_EMAIL=demo@example.com",
		"GIT_COMMITTER_NAME=Demo", "GIT_COMMITTER_EMAIL=demo@example.com")

	// First run: everything is created.
	var first *devProcess
	var port int
	var out string
	testenv.RetryOnAddrInUse(t, func() (err error) {
		port = testenv.FreePort(t)
		first = startDev(t, bin, root, devDir, assets, port, "DEV_ARGS=--ssh-max-startups-per-source=1")
		out, err = first.tryReady(t)
		return err
	})
	exports := lineWith(t, out, "export KUBECONFIG=")
	kubectl := lineWith(t, out, " get sshkeys,gitprojects")
	clone := lineWith(t, out, " git clone ")
	sshCommand := regexp.MustCompile(`^GIT_SSH_COMMAND="([^"]*)"`).FindStringSubmatch(clone)
	if sshCommand == nil {
		t.Fatalf("the clone command sets no GIT_SSH_COMMAND: %q", clone)
	}
	wantURL := "ssh://git@127.0.0.1:" + strconv.Itoa(port) + "/demo/hello.git"
	if !strings.HasSuffix(clone, " git clone "+wantURL) {
		t.Fatalf("the clone command does not clone %s: %q", wantURL, clone)
	}

	got := shell(t, work, gitEnv, exports+" && "+kubectl)
	if !regexp.MustCompile(`(?m)^sshpublickey\.gitssh\.dev/demo\s+demo\s.*True`).MatchString(got) ||
		!regexp.MustCompile(`(?m)^gitproject\.gitssh\.dev/demo-hello\s+demo\s+hello\s.*True\s+\d+(\.\d+)? (bytes|KiB|MiB)\s+`+regexp.QuoteMeta(wantURL)).MatchString(got) {
		t.Fatalf("kubectl does not show the demo key and project as Ready (and the project's SIZE and URL):\n%s", got)
	}
	shell(t, work, gitEnv, clone+" hello")
	repo := filepath.Join(work, "hello")
	if err := os.WriteFile(filepath.Join(repo, "README"), []byte("hello from make dev\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pushEnv := slices.Concat(gitEnv, []string{"GIT_SSH_COMMAND=" + sshCommand[1]})
	shell(t, repo, pushEnv, "git add README && git commit -q -m 'Say hello' && git push -q origin HEAD:main")
	pushed := strings.TrimSpace(shell(t, repo, pushEnv, "git rev-parse HEAD"))

	// DEV_ARGS reached gitssh: a second handshake from one source is dropped at once.
	held, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	readVersion := func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 64))
		return err
	}
	if err := readVersion(held); err != nil {
		t.Fatalf("the first handshake was not admitted: %v", err)
	}
	dropped, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	if err := readVersion(dropped); err == nil {
		t.Fatal("a second handshake from 127.0.0.1 was admitted: DEV_ARGS=--ssh-max-startups-per-source=1 had no effect")
	}
	_ = dropped.Close()
	_ = held.Close()
	metricsURL := strings.TrimPrefix(lineWith(t, out, "METRICS_URL="), "METRICS_URL=")
	if !regexp.MustCompile(`(?m)^METRICS_URL=http://127\.0\.0\.1:\d+/metrics$`).MatchString(out) {
		t.Fatalf("no line METRICS_URL=http://127.0.0.1:PORT/metrics of its own:\n%s", out)
	}
	metrics := httpGet(t, metricsURL)
	for _, series := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^gitssh_ssh_git_commands_total\{result="ok",service="upload-pack"\} [1-9]`),
		regexp.MustCompile(`(?m)^gitssh_ssh_git_commands_total\{result="ok",service="receive-pack"\} 1$`),
		regexp.MustCompile(`(?m)^gitssh_ssh_connections_dropped_total\{limit="max_startups_per_source"\} 1$`),
	} {
		if !series.MatchString(metrics) {
			t.Errorf("%s does not match %s", metricsURL, series)
		}
	}

	pinned := filepath.Join(t.TempDir(), "known_hosts")
	knownHosts, err := os.ReadFile(filepath.Join(devDir, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pinned, knownHosts, 0o600); err != nil {
		t.Fatal(err)
	}
	first.interruptAndWait(t)

	// Second run, same directory: same host key, same repository.
	strict := "ssh -F /dev/null -i " + filepath.Join(devDir, "demo_ed25519") + " -o IdentitiesOnly=yes -o BatchMode=yes" +
		" -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + pinned
	checkRestarted := func() {
		t.Helper()
		refs := shell(t, work, slices.Concat(gitEnv, []string{"GIT_SSH_COMMAND=" + strict}), "git ls-remote "+wantURL)
		if !strings.Contains(refs, pushed+"\trefs/heads/main") {
			t.Fatalf("after a restart, refs/heads/main is not the pushed commit %s:\n%s", pushed, refs)
		}
	}
	second := startDev(t, bin, root, devDir, assets, port)
	second.waitReady(t)
	checkRestarted()

	// Killed rather than stopped, it leaves etcd and kube-apiserver behind (envtest
	// starts them in process groups of their own); the next run stops them first.
	leftovers := childProcesses(second.cmd.Process.Pid)
	if len(leftovers) < 2 {
		t.Fatalf("expected etcd and kube-apiserver among the children of make dev, found %v", leftovers)
	}
	t.Cleanup(func() {
		for _, pid := range leftovers {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-second.exited
	third := startDev(t, bin, root, devDir, assets, port)
	third.waitReady(t)
	for _, pid := range leftovers {
		if alive(pid) {
			t.Errorf("process %d, left over by the killed run, still runs", pid)
		}
	}
	checkRestarted()
	third.interruptAndWait(t)
}

// devProcess is one run of the dev binary.
type devProcess struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{}
	err    error
}

func startDev(t *testing.T, bin, root, devDir, assets string, port int, env ...string) *devProcess {
	t.Helper()
	p := &devProcess{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Dir = root
	p.cmd.Env = append(os.Environ(), "GITSSH_DEV_DIR="+devDir, "DEV_SSH_PORT="+strconv.Itoa(port), "KUBEBUILDER_ASSETS="+assets)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		// The test failed half-way: stop it as Ctrl-C would, and never leave it running.
		children := childProcesses(p.cmd.Process.Pid)
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(exitTimeout):
			_ = p.cmd.Process.Kill()
			for _, pid := range children {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			<-p.exited
		}
	})
	return p
}

// waitReady waits for the ready line and returns stdout up to it.
func (p *devProcess) waitReady(t *testing.T) string {
	t.Helper()
	out, err := p.tryReady(t)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryReady is waitReady, but returns an error if make dev exits first.
func (p *devProcess) tryReady(t *testing.T) (string, error) {
	t.Helper()
	deadline := time.After(readyTimeout)
	for {
		if out := p.stdout.String(); strings.Contains(out, "\n"+readyLine+"\n") {
			return out, nil
		}
		select {
		case <-p.exited:
			return "", fmt.Errorf("make dev exited (%v) before %q\nstdout:\n%s\nstderr:\n%s", p.err, readyLine, p.stdout, tail(p.stderr.String()))
		case <-deadline:
			t.Fatalf("no %q within %s\nstdout:\n%s\nstderr:\n%s", readyLine, readyTimeout, p.stdout, tail(p.stderr.String()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// interruptAndWait sends SIGINT and checks that the process exits with status 0 in
// time, and that etcd and kube-apiserver, which envtest starts in process groups of
// their own, are gone with it.
func (p *devProcess) interruptAndWait(t *testing.T) {
	t.Helper()
	children := childProcesses(p.cmd.Process.Pid)
	if len(children) < 2 {
		t.Fatalf("expected etcd and kube-apiserver among the children of make dev, found %v", children)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(exitTimeout):
		t.Fatalf("make dev did not exit within %s of SIGINT\nstderr:\n%s", exitTimeout, tail(p.stderr.String()))
	}
	if p.err != nil {
		t.Fatalf("make dev exited with %v after SIGINT\nstderr:\n%s", p.err, tail(p.stderr.String()))
	}
	t.Logf("make dev stopped %s after SIGINT", time.Since(start).Round(time.Millisecond))
	for _, pid := range children {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d (a child of make dev) outlived it", pid)
		}
	}
}

// childProcesses lists the pids whose parent is pid.
func childProcesses(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var children []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(n); ok && ppid == pid {
			children = append(children, n)
		}
	}
	return children
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

func procStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// pid (comm) state ppid …; comm may hold spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(fields[1])
	return ppid, fields[0], err == nil
}

func lineWith(t *testing.T, out, substr string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, substr) {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("make dev printed no line with %q:\n%s", substr, out)
	return ""
}

// shell runs a command line as a user would paste it, in bash.
func shell(t *testing.T, dir string, env []string, line string) string {
	t.Helper()
	cmd := exec.Command("bash", "-ec", line)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		t.Fatal(err)
	}
	return string(out)
}

// A DEV_ARGS flag gitssh does not have stops make dev at once, before any control plane,
// with a message that names it.
func TestDevArgsUnknownFlag(t *testing.T) {
	cmd := exec.Command("go", "run", ".")
	cmd.Env = append(os.Environ(), "DEV_ARGS=--ssh-max-startups=8 --no-such-flag=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), `DEV_ARGS="--ssh-max-startups=8 --no-such-flag=1": flag provided but not defined: -no-such-flag`) {
		t.Fatalf("want a failure that names the flag, got %v:\n%s", err, out)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %s", url, err, resp.Status)
	}
	return string(b)
}

func tail(s string) string {
	const max = 8000
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
