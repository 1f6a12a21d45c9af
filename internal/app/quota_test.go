package app_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// A project with a quota: a push under it is stored and its size shows in the status; a
// push larger than what is left is refused with a message naming the quota; once the
// repository is over its (lowered) quota WithinQuota turns False with a Warning event and
// every push is refused before git runs; raising the quota lets pushes in again.
func TestProjectQuota(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	alice := newUserKey(t, "alice")
	createKey(t, ns, "alice", "alice", alice.publicKey)
	project := createProject(t, ns, "alice-big", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "big", Quota: ptr.To(resource.MustParse("1Mi"))})
	setQuota := func(quota string) {
		before := project.DeepCopy()
		project.Spec.Quota = ptr.To(resource.MustParse(quota))
		g.Expect(env.Client.Patch(ctx, project, client.MergeFrom(before))).To(Succeed())
	}
	withinQuota := func(g Gomega) metav1.Condition {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(project), project)).To(Succeed())
		c := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)
		g.Expect(c).NotTo(BeNil())
		return *c
	}

	work := filepath.Join(t.TempDir(), "big")
	g.Eventually(func() error { _, err := inst.git(alice, "", "clone", inst.url("alice", "big"), work); return err }).
		WithTimeout(eventually).Should(Succeed())
	commit := func(name string, size int) {
		data := make([]byte, size)
		_, _ = rand.Read(data) // incompressible: the pack is as large as the file
		g.Expect(os.WriteFile(filepath.Join(work, name), data, 0o644)).To(Succeed())
		g.Expect(inst.git(alice, work, "add", name)).Error().NotTo(HaveOccurred())
		g.Expect(inst.git(alice, work, "commit", "-q", "-m", name)).Error().NotTo(HaveOccurred())
	}

	commit("fits", 300<<10)
	out, err := inst.git(alice, work, "push", "origin", "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		within := withinQuota(g)
		g.Expect(within.Status).To(Equal(metav1.ConditionTrue), within.Message)
		g.Expect(project.Status.Repository.SizeBytes).To(BeNumerically(">", 300<<10), "measured again after the push")
		g.Expect(within.Message).To(MatchRegexp(`^uses 3\d\d(\.\d)? KiB of its 1 MiB quota$`))
	}).WithTimeout(eventually).Should(Succeed())

	commit("too-big", 900<<10)
	out, err = inst.git(alice, work, "push", "origin", "HEAD:main")
	g.Expect(err).To(HaveOccurred(), "900 KiB more do not fit in a 1 MiB quota holding 300 KiB: %s", out)
	g.Expect(out).To(MatchRegexp(`gitssh: push refused: the pack is larger than the remaining 7\d\d(\.\d)? KiB of the repository's 1 MiB quota`))
	g.Expect(inst.git(alice, work, "ls-remote", "origin", "main")).To(HavePrefix(revParse(g, inst, alice, work, "HEAD~1")))

	// Lowered under what the repository holds: over quota.
	setQuota("200Ki")
	g.Eventually(func(g Gomega) {
		within := withinQuota(g)
		g.Expect(within.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(within.Reason).To(Equal(gitsshv1alpha1.ReasonOverQuota))
		g.Expect(within.Message).To(MatchRegexp(`^uses 3\d\d(\.\d)? KiB of its 200 KiB quota; pushes are refused until it is below: raise spec.quota$`))
		g.Expect(eventReasons(g, ns, project.Name)).To(ContainElement(gitsshv1alpha1.ReasonOverQuota))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(readyCondition(g, project).Status).To(Equal(metav1.ConditionTrue), "an over-quota repository is still served")
	g.Expect(inst.git(alice, work, "reset", "-q", "--hard", "HEAD~1")).Error().NotTo(HaveOccurred())
	g.Expect(inst.git(alice, work, "commit", "-q", "--allow-empty", "-m", "tiny")).Error().NotTo(HaveOccurred())
	g.Eventually(func() string { out, _ := inst.git(alice, work, "push", "origin", "HEAD:main"); return out }).
		WithTimeout(eventually).Should(MatchRegexp(
		`gitssh: push refused: repository "alice/big" uses 3\d\d(\.\d)? KiB of its 200 KiB quota; ask an admin of the project to raise spec.quota of its GitProject`))
	out, err = inst.git(alice, "", "clone", inst.url("alice", "big"), filepath.Join(t.TempDir(), "clone"))
	g.Expect(err).NotTo(HaveOccurred(), "cloning is never refused: %s", out)

	setQuota("10Mi")
	g.Eventually(func(g Gomega) { g.Expect(withinQuota(g).Status).To(Equal(metav1.ConditionTrue)) }).WithTimeout(eventually).Should(Succeed())
	g.Eventually(func() error {
		out, err := inst.git(alice, work, "push", "origin", "HEAD:main")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}).WithTimeout(eventually).Should(Succeed())
}

func revParse(g Gomega, inst *instance, key userKey, dir, rev string) string {
	out, err := inst.git(key, dir, "rev-parse", rev)
	g.Expect(err).NotTo(HaveOccurred(), out)
	return out[:40]
}
