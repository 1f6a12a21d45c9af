//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// Tests run in this order and build on each other's state (the installed release, the
// user and project of TestCloneAndPush), as a person would try the chart.

// 1: `helm install` with the chart's defaults became Ready (hack/cluster/up.sh did it),
// `helm test` passes, and the served host key is the published one.
func TestInstall(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	c.podName(t)
	out := c.helmOK(t, "test", release, "--logs", "--timeout", "3m")
	g.Expect(out).To(ContainSubstring("OK: the SSH port answers with the published host keys"))

	host, port := c.address(t)
	kh := c.knownHosts(t, host)
	published, err := os.ReadFile(kh)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hostKeys(string(published))).NotTo(BeEmpty())
	g.Expect(scan(t, host, port)).To(Equal(hostKeys(string(published))))

	// A key the server does not know is refused after the host key was checked strictly.
	stranger := filepath.Join(t.TempDir(), "id")
	_, err = run(t, 30*time.Second, "", nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger)
	g.Expect(err).NotTo(HaveOccurred())
	out, err = run(t, 30*time.Second, "", nil, "ssh", "-i", stranger, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+kh, "-p", port, "git@"+host, "git-upload-pack", "/x/y.git")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("Permission denied"))
	g.Expect(out).NotTo(ContainSubstring("Host key verification failed"))
}

// helloContent is the README TestCloneAndPush pushes and later tests find again: new on
// every run, as 'make e2e-run' runs again against the same repository.
var helloContent = fmt.Sprintf("hello from e2e, run %d\n", time.Now().UnixNano())

// 2: a key and a project applied with kubectl: clone, push, clone again, LAST USED, and
// git archive --remote.
func TestCloneAndPush(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	host, port := c.address(t)
	alice := c.newUser(t, "alice", c.knownHosts(t, host))
	c.newProject(t, "alice", "hello")
	url := repoURL(host, port, "alice", "hello")

	work := t.TempDir()
	alice.gitOK(t, work, "clone", url, "first")
	first := filepath.Join(work, "first")
	g.Expect(os.WriteFile(filepath.Join(first, "README"), []byte(helloContent), 0o644)).To(Succeed())
	alice.gitOK(t, first, "add", "README")
	alice.gitOK(t, first, "commit", "-m", "first")
	alice.gitOK(t, first, "push", "origin", "HEAD:main")

	alice.gitOK(t, work, "clone", url, "second")
	got, err := os.ReadFile(filepath.Join(work, "second", "README"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(got)).To(Equal(helloContent))

	out := alice.gitOK(t, work, "archive", "--remote="+url, "--format=tar", "-o", filepath.Join(work, "a.tar"), "main")
	tarList, err := run(t, time.Minute, work, nil, "tar", "-tf", filepath.Join(work, "a.tar"))
	g.Expect(err).NotTo(HaveOccurred(), out+tarList)
	g.Expect(strings.Fields(tarList)).To(ContainElement("README"))

	// usage.flushInterval is 1m by default: LAST USED appears within about that.
	g.Eventually(func() string {
		out, _ := c.kubectlErr(t, "get", "sshkeys", "alice")
		return column(out, "LAST USED")
	}).WithTimeout(150 * time.Second).WithPolling(2 * time.Second).Should(MatchRegexp(`^\d+[smh]`))
}

// column is the value under header in kubectl's one-row table: the columns are aligned,
// so it starts where the header does.
func column(table, header string) string {
	lines := strings.Split(table, "\n")
	if len(lines) < 2 {
		return ""
	}
	i := strings.Index(lines[0], header)
	if i < 0 || i >= len(lines[1]) {
		return ""
	}
	if f := strings.Fields(lines[1][i:]); len(f) > 0 {
		return f[0]
	}
	return ""
}

// 9: the pod runs as non-root with a read-only root filesystem, no capabilities and the
// runtime's default seccomp profile; checked from inside the running container.
func TestPodSecurity(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	pod := c.podName(t)
	// gitssh's process (PID 1 is tini, the init that reaps orphans).
	status := c.kubectlOK(t, "exec", pod, "--", "sh", "-c", `for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = gitssh ] && cat $p/status; done; true`)
	g.Expect(status).To(ContainSubstring("Name:\tgitssh"))
	field := func(name string) string {
		for _, l := range strings.Split(status, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == name+":" {
				return strings.Join(f[1:], " ")
			}
		}
		return ""
	}
	g.Expect(field("Uid")).To(Equal("65532 65532 65532 65532"))
	g.Expect(field("Gid")).To(Equal("65532 65532 65532 65532"))
	for _, caps := range []string{"CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		g.Expect(field(caps)).To(Equal("0000000000000000"), caps)
	}
	g.Expect(field("NoNewPrivs")).To(Equal("1"))
	g.Expect(field("Seccomp")).To(Equal("2"), "seccomp filter mode (RuntimeDefault)")

	out, err := c.kubectlErr(t, "exec", pod, "--", "touch", "/usr/local/bin/x")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("Read-only file system"))
	// Where gitssh writes: the repositories volume and /tmp (HOME).
	c.kubectlOK(t, "exec", pod, "--", "touch", "/var/lib/gitssh/repositories/.e2e", "/tmp/.e2e")
}

// The pod runs the git the image compiles (hack/git-build.sh): the one first in
// gitssh's PATH, with OpenSSL's SHA-1 for pack checksums and the collision-
// detecting one for object names.
func TestShippedGit(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	pod := c.podName(t)
	// The PATH gitssh itself runs with, read from its environment.
	path := c.kubectlOK(t, "exec", pod, "--", "sh", "-c",
		`for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = gitssh ] && tr '\0' '\n' <$p/environ | sed -n 's/^PATH=//p'; done; true`)
	g.Expect(strings.TrimSpace(path)).NotTo(BeEmpty())
	options := c.kubectlOK(t, "exec", pod, "--", "env", "PATH="+strings.TrimSpace(path), "git", "version", "--build-options")
	g.Expect(options).To(MatchRegexp(`(?m)^SHA-1: SHA1_DC$`))
	g.Expect(options).To(MatchRegexp(`(?m)^non-collision-detecting-SHA-1: SHA1_OPENSSL_UNSAFE$`))
}

// gitssh re-executes itself at start to run with the chart's timer slack
// (internal/timerslack): it can under the runtime's seccomp profile, without
// capabilities and with no_new_privs. Its start line says what it runs with
// (another thread's /proc/PID/timerslack_ns is not readable without CAP_SYS_NICE).
func TestTimerSlack(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	logs := c.kubectlOK(t, "logs", c.podName(t), "-c", "gitssh")
	var start string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, `"Starting gitssh"`) {
			start = line
		}
	}
	g.Expect(start).NotTo(BeEmpty(), "no start line in the pod's log:\n%s", logs)
	g.Expect(start).To(ContainSubstring(`"timerSlack":"4ms"`))
	g.Expect(logs).NotTo(ContainSubstring("Kept the kernel's timer slack"))
}

// 3: the pod is deleted; the new one serves the same host key and the same repositories.
func TestPodDeleted(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	host, port := c.address(t)
	before := scan(t, host, port)
	old := c.podName(t)
	c.kubectlOK(t, "delete", "pod", old, "--wait=true", "--timeout=2m")
	g.Expect(c.podName(t)).NotTo(Equal(old))

	g.Expect(scanEventually(t, host, port)).To(Equal(before))
	expectHelloPushed(t, c, host, port)
}

// 7: `helm uninstall` then `helm install`: same host key, repositories, keys and projects.
func TestUninstallInstall(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	host, port := c.address(t)
	before := scan(t, host, port)
	c.helmOK(t, "uninstall", release, "--wait", "--timeout", "3m")
	c.helmOK(t, c.installArgs()...)

	g.Expect(c.kubectlOK(t, "get", "sshkeys", "alice", "-o", "name")).To(ContainSubstring("alice"))
	g.Expect(c.kubectlOK(t, "get", "gitprojects", "alice-hello", "-o", "name")).To(ContainSubstring("alice-hello"))
	host, port = c.address(t)
	g.Expect(scanEventually(t, host, port)).To(Equal(before))
	expectHelloPushed(t, c, host, port)
}

// expectHelloPushed clones alice/hello afresh and finds the README TestCloneAndPush pushed.
func expectHelloPushed(t *testing.T, c *cluster, host, port string) {
	alice := c.newUser(t, "alice", c.knownHosts(t, host))
	work := t.TempDir()
	alice.gitOK(t, work, "clone", repoURL(host, port, "alice", "hello"), "again")
	got, err := os.ReadFile(filepath.Join(work, "again", "README"))
	g := NewWithT(t)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(got)).To(Equal(helloContent))
}
