//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// 6: replicaCount 2 on a ReadWriteMany volume, a second release in its own namespace (the
// first owns the CRDs). Both pods serve clones and pushes; when the leader is deleted the
// other takes over status writes and repository creation within the lease time.
func TestTwoReplicas(t *testing.T) {
	g := NewWithT(t)
	c := env(t).other("gitssh-ha", "gitssh-ha")
	t.Cleanup(func() {
		_, _ = run(t, 5*time.Minute, "", nil, c.helm, "-n", c.ns, "uninstall", c.release, "--wait")
		_, _ = c.kubectlErr(t, "delete", "gitprojects,sshpublickeys,pvc", "--all", "--wait=false")
	})
	if _, err := c.kubectlErr(t, "get", "namespace", c.ns); err != nil { // kept by an earlier 'make e2e-run'
		c.kubectlOK(t, "create", "namespace", c.ns)
	}
	c.helmOK(t, append(c.installArgs(), "--set", "replicaCount=2", "--set", "persistence.accessModes={ReadWriteMany}", "--set", "crds.enabled=false")...)
	var pods []string
	g.Eventually(func(g Gomega) {
		pods = c.readyPods(t, g)
		g.Expect(pods).To(HaveLen(2))
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())

	host, _ := c.address(t)
	kh := c.knownHosts(t, host)
	bob := c.newUser(t, "bob", kh)
	c.newProject(t, "bob", "shared")
	// Each pod directly (its address, port 2222), checking the host key the Service's
	// address publishes.
	work := t.TempDir()
	for _, pod := range pods {
		ip := strings.TrimSpace(c.kubectlOK(t, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
		direct := &user{name: bob.name, key: bob.key, sshCommand: bob.sshCommand + " -o HostKeyAlias=" + host}
		url := "ssh://git@" + ip + ":2222/bob/shared.git"
		dir := filepath.Join(work, pod)
		direct.gitOK(t, work, "clone", url, pod)
		g.Expect(os.WriteFile(filepath.Join(dir, pod), []byte(pod+"\n"), 0o644)).To(Succeed())
		direct.gitOK(t, dir, "add", pod)
		direct.gitOK(t, dir, "commit", "-q", "-m", pod)
		direct.gitOK(t, dir, "push", "-q", "origin", "HEAD:main")
	}
	for _, pod := range pods {
		ip := strings.TrimSpace(c.kubectlOK(t, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
		direct := &user{sshCommand: bob.sshCommand + " -o HostKeyAlias=" + host}
		files := direct.gitOK(t, work, "archive", "--remote=ssh://git@"+ip+":2222/bob/shared.git", "main")
		for _, p := range pods {
			g.Expect(files).To(ContainSubstring(p), "a clone through %s has both pods' pushes", pod)
		}
	}

	// Each pod has a pack cache of its own: a whole answer one pod cached must not outlive
	// a push through the other. pods[0] answers a clone from its cache, pods[1] takes a
	// push, and pods[0]'s next clone has it (a new ls-refs answer, so a new key).
	direct := &user{name: bob.name, key: bob.key, sshCommand: bob.sshCommand + " -o HostKeyAlias=" + host}
	podURL := func(pod string) string {
		ip := strings.TrimSpace(c.kubectlOK(t, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
		return "ssh://git@" + ip + ":2222/bob/shared.git"
	}
	answerMisses := `gitssh_pack_cache_responses_total{result="miss"}`
	cloneMain := func(pod, name string) string {
		direct.gitOK(t, work, "clone", "-q", "--bare", podURL(pod), name)
		return strings.TrimSpace(direct.gitOK(t, filepath.Join(work, name), "rev-parse", "main"))
	}
	before := c.metrics(t, g, pods[0])
	cloneMain(pods[0], "cached.git")
	g.Expect(c.metrics(t, g, pods[0])[answerMisses]-before[answerMisses]).To(Equal(1.0), "%s cached the clone's answer", pods[0])
	pushed := commitFile(t, direct, filepath.Join(work, pods[1]), "after-cache", 1000)
	direct.gitOK(t, filepath.Join(work, pods[1]), "push", "-q", "origin", "HEAD:main")
	g.Expect(cloneMain(pods[0], "fresh.git")).To(Equal(pushed), "%s serves the push through %s", pods[0], pods[1])

	leader := func() string {
		out, _ := c.kubectlErr(t, "get", "lease", c.release+"-leader", "-o", "jsonpath={.spec.holderIdentity}")
		return strings.TrimSpace(out)
	}
	var old string
	g.Eventually(func() string { old = leader(); return old }).WithTimeout(time.Minute).ShouldNot(BeEmpty())
	leaderPod := strings.SplitN(old, "_", 2)[0]
	g.Expect(pods).To(ContainElement(leaderPod))
	started := time.Now()
	c.kubectlOK(t, "delete", "pod", leaderPod, "--wait=false")
	// The deleted leader keeps its Lease while it drains; once it stops it hands it over
	// (LeaderElectionReleaseOnCancel), and the other replica must take over.
	g.Eventually(leader).WithTimeout(40*time.Second).WithPolling(200*time.Millisecond).
		ShouldNot(Or(BeEmpty(), HavePrefix(leaderPod+"_")), "the other replica takes the Lease")
	t.Logf("the Lease moved %s after the leader was deleted", time.Since(started).Round(time.Second))
	c.apply(t, "apiVersion: gitssh.dev/v1alpha1\nkind: GitProject\nmetadata: {name: bob-after}\nspec: {owner: bob, project: after}\n")
	// controller-runtime's lease: 15s, renewed every 2s.
	c.kubectlOK(t, "wait", "--for=condition=Ready", "gitproject/bob-after", "--timeout=40s")
	t.Logf("the new leader %s provisioned a repository %s after the leader was deleted", leader(), time.Since(started).Round(time.Second))
	g.Expect(leader()).NotTo(HavePrefix(leaderPod + "_"))
}
