package controllers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/controllers"
)

// sample reads a counter or gauge of the metrics registry, summed over the labels given.
func sample(g Gomega, name string, labels map[string]string) float64 {
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// pushSmall makes n small pushes into the bare repository at bare, stored loose as git
// does by default (a repository from before housekeeping).
func pushSmall(t *testing.T, bare, branch string, n int) {
	work := t.TempDir()
	gitCmd(t, work, "init", "-q", "-b", "main")
	for i := range n {
		NewWithT(t).Expect(os.WriteFile(filepath.Join(work, fmt.Sprintf("f%d", i%5)), fmt.Appendf(nil, "%d\n", i), 0o644)).To(Succeed())
		gitCmd(t, work, "add", "-A")
		gitCmd(t, work, "commit", "-q", "-m", fmt.Sprint(i))
		gitCmd(t, work, "push", "-q", bare, "HEAD:refs/heads/"+branch)
	}
}

// requestTime is a value for the maintenance annotation, as `date -u` gives it: whole
// seconds, polled until it is after the last run's start (status times are whole seconds).
func requestTime(g Gomega, last time.Time) string {
	var at time.Time
	g.Eventually(func() bool {
		at = time.Now().UTC().Truncate(time.Second)
		return at.After(last)
	}).WithTimeout(3 * time.Second).WithPolling(50 * time.Millisecond).Should(BeTrue())
	return at.Format(time.RFC3339)
}

// maintenance reads project and returns its Maintenance condition, once housekeeping has
// run on it.
func maintenance(g Gomega, project *gitsshv1alpha1.GitProject) metav1.Condition {
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(project), project)).To(Succeed())
	c := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionMaintenance)
	g.Expect(c).NotTo(BeNil())
	g.Expect(project.Status.Repository).NotTo(BeNil())
	g.Expect(project.Status.Repository.LastMaintenanceTime).NotTo(BeNil())
	return *c
}

// maintainedProject runs the GitProject and housekeeping controllers (push delay 1s) in a
// namespace of their own, creates the project owner/name there and waits for its first
// run, which a new repository gets at once.
func maintainedProject(t *testing.T, owner, name string) *gitsshv1alpha1.GitProject {
	t.Helper()
	g := NewWithT(t)
	ns := env.Namespace(t)
	startGitProjectReconciler(t, ns, &controllers.PublicEndpoint{Host: "git.example.com"}, nil, func(mgr ctrl.Manager) error {
		return (&controllers.HousekeepingReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("test"), PushDelay: time.Second,
		}).SetupWithManager(mgr)
	})
	project := &gitsshv1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: owner + "-" + name, Namespace: ns},
		Spec:       gitsshv1alpha1.GitProjectSpec{Owner: owner, Project: name},
	}
	g.Expect(env.Client.Create(context.Background(), project)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := maintenance(g, project)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Message).To(HavePrefix("full run (scheduled)"), "a repository never maintained gets a run at once")
	}).WithTimeout(20 * time.Second).Should(Succeed())
	return project
}

// requestRun asks for a run of project with the annotation, as kubectl annotate would.
func requestRun(g Gomega, project *gitsshv1alpha1.GitProject) {
	before := project.DeepCopy()
	metav1.SetMetaDataAnnotation(&project.ObjectMeta, gitsshv1alpha1.MaintenanceRequestedAtAnnotation, requestTime(g, project.Status.Repository.LastMaintenanceTime.Time))
	g.Expect(env.Client.Patch(context.Background(), project, client.MergeFrom(before))).To(Succeed())
}

// A new repository gets a first run; the annotation asks for another, which packs the
// loose objects of many small pushes and reports the facts; a push recorded in
// lastPushTime brings an incremental run.
func TestHousekeepingRuns(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	project := maintainedProject(t, "acme", "api")
	first := project.Status.Repository.LastMaintenanceTime.Time
	fullRuns := sample(g, "gitssh_housekeeping_runs_total", map[string]string{"kind": "full", "result": "succeeded"})

	pushSmall(t, project.Status.RepositoryPath, "main", 30)
	requestRun(g, project)
	g.Eventually(func(g Gomega) {
		c := maintenance(g, project)
		g.Expect(project.Status.Repository.LastMaintenanceTime.Time).To(BeTemporally(">", first))
		g.Expect(c.Message).To(HavePrefix("full run (requested)"))
		g.Expect(project.Status.Repository.LooseObjects).To(BeZero())
		g.Expect(project.Status.Repository.Packs).To(Equal(int32(1)))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(sample(g, "gitssh_housekeeping_runs_total", map[string]string{"kind": "full", "result": "succeeded"})).To(Equal(fullRuns + 1))
	gitCmd(t, project.Status.RepositoryPath, "fsck", "--strict")

	// A push, as the usage recorder writes it.
	pushSmall(t, project.Status.RepositoryPath, "feature", 2)
	requested := project.Status.Repository.LastMaintenanceTime.Time
	before := project.DeepCopy()
	project.Status.LastPushTime = ptr.To(metav1.Now())
	g.Expect(env.Client.Status().Patch(ctx, project, client.MergeFrom(before))).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := maintenance(g, project)
		g.Expect(project.Status.Repository.LastMaintenanceTime.Time).To(BeTemporally(">", requested))
		g.Expect(c.Message).To(HavePrefix("incremental run (after a push)"))
		g.Expect(project.Status.Repository.LooseObjects).To(BeZero())
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

// A run on a corrupted repository sets Maintenance=False with git's message and counts a
// failure; the Ready condition is untouched. The repository counts as failing until a run
// succeeds or its project is deleted.
func TestHousekeepingFailure(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	project := maintainedProject(t, "acme", "broken")
	bare := project.Status.RepositoryPath
	// corrupt pushes to branch and overwrites its head commit, a loose object; restore
	// puts it back.
	corrupt := func(branch string, n int) (head string, restore func()) {
		pushSmall(t, bare, branch, n)
		head = gitCmd(t, bare, "rev-parse", branch)
		object := filepath.Join(bare, "objects", head[:2], head[2:])
		good, err := os.ReadFile(object)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(os.Chmod(object, 0o644)).To(Succeed())
		g.Expect(os.WriteFile(object, []byte("garbage"), 0o644)).To(Succeed())
		return head, func() { g.Expect(os.WriteFile(object, good, 0o444)).To(Succeed()) }
	}
	head, restore := corrupt("main", 1)
	failures := sample(g, "gitssh_housekeeping_failures_total", nil)
	failing := map[string]string{"reason": gitsshv1alpha1.ReasonMaintenanceFailed}
	failingBefore := sample(g, "gitssh_housekeeping_failing_repositories", failing)

	requestRun(g, project)
	g.Eventually(func(g Gomega) {
		c := maintenance(g, project)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(gitsshv1alpha1.ReasonMaintenanceFailed))
		g.Expect(c.Message).To(And(HavePrefix("full run (requested) failed: git "), ContainSubstring(head)))
		// Set just after the status write: what GitsshHousekeepingFailing alerts on.
		g.Expect(sample(g, "gitssh_housekeeping_failing_repositories", failing)).To(Equal(failingBefore + 1))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(sample(g, "gitssh_housekeeping_failures_total", nil)).To(Equal(failures + 1))
	g.Expect(meta.IsStatusConditionTrue(project.Status.Conditions, gitsshv1alpha1.ConditionReady)).To(BeTrue())

	// Repaired, its next run succeeds and it no longer counts as failing.
	restore()
	requestRun(g, project)
	g.Eventually(func(g Gomega) {
		g.Expect(maintenance(g, project).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(sample(g, "gitssh_housekeeping_failing_repositories", failing)).To(Equal(failingBefore))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Failing again, and then deleted: no longer counted.
	corrupt("other", 2)
	requestRun(g, project)
	g.Eventually(func(g Gomega) {
		g.Expect(maintenance(g, project).Status).To(Equal(metav1.ConditionFalse))
		g.Expect(sample(g, "gitssh_housekeeping_failing_repositories", failing)).To(Equal(failingBefore + 1))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(env.Client.Delete(ctx, project)).To(Succeed())
	g.Eventually(func() float64 {
		return sample(g, "gitssh_housekeeping_failing_repositories", failing)
	}).WithTimeout(20 * time.Second).Should(Equal(failingBefore))
}
