//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// These run after e2e_test.go's (files in name order): they change the release.

// 4: a push is running when `helm upgrade` (a changed value) rolls the pod. Within
// ssh.shutdownGracePeriod the push completes; past it the push fails with gitssh's
// message. Either way the repository is intact afterwards (git fsck) and its ref is the
// old or the new commit.
func TestPushDuringUpgrade(t *testing.T) {
	c := env(t)
	// The tests after this one get the release's values as they were: roll back to the
	// revision it started from ("REVISION: 3" in helm status; the output may start with
	// helm's warnings).
	revision := regexp.MustCompile(`(?m)^REVISION: (\d+)$`).FindStringSubmatch(c.helmOK(t, "status", release))
	if revision == nil {
		t.Fatal("helm status shows no REVISION line")
	}
	t.Cleanup(func() { c.rollback(t, revision[1]) })
	for i, tc := range []struct {
		grace      string // the rolled pod's ssh.shutdownGracePeriod
		size       int    // of the pushed file: random, so the push takes a while
		mustFinish bool
	}{
		{grace: "30s", size: 50 << 20, mustFinish: true},
		{grace: "1s", size: 150 << 20},
	} {
		t.Run("shutdownGracePeriod="+tc.grace, func(t *testing.T) {
			g := NewWithT(t)
			c.helmOK(t, "upgrade", release, c.chart, "--reuse-values", "--set", "ssh.shutdownGracePeriod="+tc.grace, "--wait", "--timeout", "5m")
			host, port := c.address(t)
			scanEventually(t, host, port)
			alice := c.newUser(t, "alice", c.knownHosts(t, host))
			project := fmt.Sprintf("upgrade%d", i)
			c.newProject(t, "alice", project)
			url := repoURL(host, port, "alice", project)
			work := t.TempDir()
			alice.gitOK(t, work, "clone", url, "w")
			w := filepath.Join(work, "w")
			oldCommit := commitFile(t, alice, w, "small", 1024)
			alice.gitOK(t, w, "push", "-q", "origin", "HEAD:main")
			newCommit := commitFile(t, alice, w, "big", tc.size)

			old := c.podName(t)
			pushed := make(chan error, 1)
			var pushOut string
			go func() {
				var err error
				pushOut, err = alice.git(t, w, "push", "origin", "HEAD:main")
				pushed <- err
			}()
			// The push is running once gitssh has started git for it.
			g.Eventually(func() []string {
				out, _ := c.kubectlErr(t, "exec", old, "--", "sh", "-c", "cat /proc/[0-9]*/stat")
				return strays(out)
			}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).ShouldNot(BeEmpty())
			c.helmOK(t, "upgrade", release, c.chart, "--reuse-values", "--set", fmt.Sprintf("ssh.loginGraceTime=%ds", 31+i), "--wait", "--timeout", "5m")
			pushErr := <-pushed
			t.Logf("push during the upgrade: err=%v\n%s", pushErr, pushOut)
			if tc.mustFinish {
				g.Expect(pushErr).NotTo(HaveOccurred(), "the push had ssh.shutdownGracePeriod to finish")
			} else if pushErr != nil {
				g.Expect(pushOut).To(ContainSubstring("gitssh: the server is shutting down and stopped this git command before it finished; run it again."))
			}
			pod := c.podName(t)
			g.Expect(pod).NotTo(Equal(old), "helm upgrade rolled the pod")

			c.kubectlOK(t, "exec", pod, "--", "git", "-C", "/var/lib/gitssh/repositories/alice/"+project+".git", "fsck", "--full", "--no-dangling")
			scanEventually(t, host, port)
			ref := strings.Fields(alice.gitOK(t, work, "ls-remote", url, "refs/heads/main"))
			g.Expect(ref).To(HaveLen(2))
			g.Expect(ref[0]).To(BeElementOf(oldCommit, newCommit))
			if pushErr == nil {
				g.Expect(ref[0]).To(Equal(newCommit), "the push reported success")
			}
		})
	}
}

// 5: 55 pushes, each stored as a pack (receive.unpackLimit=1), then a housekeeping run
// asked for with the maintenance annotation: its git processes (prune, repack,
// commit-graph) are gitssh's children and any orphan is the container's PID 1's (tini).
// None may stay behind or a zombie, and the run must have packed the 55 packs.
// (receive.autogc is off: housekeeping replaced git gc --auto behind receive-pack.)
func TestNoZombies(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	host, port := c.address(t)
	alice := c.newUser(t, "alice", c.knownHosts(t, host))
	c.newProject(t, "alice", "gc")
	url := repoURL(host, port, "alice", "gc")
	work := t.TempDir()
	alice.gitOK(t, work, "clone", url, "w")
	w := filepath.Join(work, "w")
	for i := range 55 {
		for f := range 20 {
			g.Expect(os.WriteFile(filepath.Join(w, fmt.Sprintf("f%03d", f)), fmt.Appendf(nil, "%d %d\n", i, f), 0o644)).To(Succeed())
		}
		alice.gitOK(t, w, "add", "-A")
		alice.gitOK(t, w, "commit", "-q", "-m", fmt.Sprint(i))
		alice.gitOK(t, w, "push", "-q", "origin", "HEAD:main")
	}
	pod := c.podName(t)
	countPacks := func() int {
		out := c.kubectlOK(t, "exec", pod, "--", "sh", "-c", "ls /var/lib/gitssh/repositories/alice/gc.git/objects/pack/ | grep -c 'pack$' || true")
		n, err := strconv.Atoi(strings.TrimSpace(out))
		g.Expect(err).NotTo(HaveOccurred(), out)
		return n
	}
	g.Expect(countPacks()).To(BeNumerically(">=", 50), "every push is stored as a pack")
	c.kubectlOK(t, "annotate", "--overwrite", "gitproject/alice-gc",
		"gitssh.dev/maintenance-requested-at="+time.Now().UTC().Add(-time.Second).Format(time.RFC3339))
	g.Eventually(countPacks).WithTimeout(2*time.Minute).WithPolling(2*time.Second).Should(BeNumerically("<=", 2),
		"the requested housekeeping run repacked the 55 pushes' packs")
	g.Eventually(func() []string {
		return strays(c.kubectlOK(t, "exec", pod, "--", "sh", "-c", "cat /proc/[0-9]*/stat"))
	}).WithTimeout(2*time.Minute).WithPolling(2*time.Second).Should(BeEmpty(), "processes in the pod besides tini (PID 1) and gitssh")
	alice.gitOK(t, work, "clone", url, "after")
}

// strays are the processes in /proc/*/stat lines other than the container's init (tini),
// gitssh, and the sh and cat that read them; zombies are marked.
func strays(stat string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(stat), "\n") {
		open, closing := strings.Index(line, "("), strings.LastIndex(line, ")")
		if open < 0 || closing < 0 {
			continue
		}
		pid, comm, rest := strings.TrimSpace(line[:open]), line[open+1:closing], strings.Fields(line[closing+1:])
		if comm == "tini" || comm == "gitssh" || comm == "sh" || comm == "cat" || len(rest) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("pid %s %s state %s", pid, comm, rest[0]))
	}
	return out
}
