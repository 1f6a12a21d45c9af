package controllers_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// While the SSH server is not serving, or has no public address, a project's repository is
// created but its clone URL stays empty and Ready says why; once both are there, the URL
// appears without any change to the object.
func TestCloneURLWaitsForTheServerAndItsAddress(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	var serving atomic.Bool
	// No configured host: the address comes from a LoadBalancer Service, absent for now.
	endpoint := &controllers.PublicEndpoint{
		Service: types.NamespacedName{Namespace: ns, Name: "gitssh"},
		Reader:  env.Client,
		TTL:     100 * time.Millisecond,
	}

	startGitProjectReconciler(t, ns, endpoint, serving.Load)
	ctx := context.Background()

	project := &gitsshv1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-api", Namespace: ns},
		Spec:       gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api"},
	}
	g.Expect(env.Client.Create(ctx, project)).To(Succeed())
	ready := func(g Gomega) *metav1.Condition {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(project), project)).To(Succeed())
		c := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		return c
	}

	g.Eventually(func(g Gomega) {
		c := ready(g)
		g.Expect(c.Reason).To(Equal(gitsshv1alpha1.ReasonNotServing))
		g.Expect(c.Message).To(ContainSubstring("not accepting connections"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(project.Status.CloneURL).To(BeEmpty())
	g.Expect(project.Status.RepositoryPath).To(BeADirectory(), "the repository is created before the server serves")

	serving.Store(true)
	g.Eventually(func(g Gomega) {
		g.Expect(ready(g).Message).To(ContainSubstring("no public address yet"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(project.Status.CloneURL).To(BeEmpty())

	service := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "gitssh", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "ssh", Port: 22, TargetPort: intstr.FromInt32(2222)}}},
	}
	g.Expect(env.Client.Create(ctx, service)).To(Succeed())
	service.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "git.example.com"}}
	g.Expect(env.Client.Status().Update(ctx, service)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(ready(g).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(project.Status.CloneURL).To(Equal("ssh://git@git.example.com/acme/api.git"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

// startGitProjectReconciler runs the GitProject reconciler, and what more adds, in its own
// manager watching namespace ns until the test ends; repositories go into a new directory.
func startGitProjectReconciler(t *testing.T, ns string, endpoint *controllers.PublicEndpoint, serving func() bool, more ...func(ctrl.Manager) error) {
	t.Helper()
	root := t.TempDir()
	startManager(t, ns, func(mgr ctrl.Manager) error {
		err := errors.Join(controllers.SetupIndexes(context.Background(), mgr), (&controllers.GitProjectReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("test"), Store: repostore.Store{Root: root},
			SSHUser: "git", Endpoint: endpoint, Serving: serving,
		}).SetupWithManager(mgr))
		for _, setup := range more {
			err = errors.Join(err, setup(mgr))
		}
		return err
	})
}

// The leader measures a project's repository: on creation, again when a push shows up in
// status.lastPushTime (no spec change, long before the periodic recheck), and when the
// quota changes. Going over the quota sets WithinQuota=False with a Warning event; raising
// the quota sets it back with a Normal one.
func TestRepositorySizeAndQuotaCondition(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	startGitProjectReconciler(t, ns, &controllers.PublicEndpoint{Host: "git.example.com"}, nil)
	ctx := context.Background()
	project := &gitsshv1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-api", Namespace: ns},
		Spec:       gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api", Quota: ptr.To(resource.MustParse("1Mi"))},
	}
	g.Expect(env.Client.Create(ctx, project)).To(Succeed())
	get := func(g Gomega) (*gitsshv1alpha1.RepositoryStatus, metav1.Condition) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(project), project)).To(Succeed())
		g.Expect(project.Status.Repository).NotTo(BeNil())
		c := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)
		g.Expect(c).NotTo(BeNil())
		return project.Status.Repository, *c
	}

	var empty int64
	g.Eventually(func(g Gomega) {
		repo, within := get(g)
		g.Expect(repo.SizeBytes).To(BeNumerically(">", 0), "HEAD and config")
		g.Expect(repo.SizeBytes).To(BeNumerically("<", 4096))
		g.Expect(repo.Size).To(HaveSuffix(" bytes"))
		g.Expect(within.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(within.Reason).To(Equal(gitsshv1alpha1.ReasonWithinQuota))
		g.Expect(within.Message).To(MatchRegexp(`^uses \d+ bytes of its 1 MiB quota$`))
		empty = repo.SizeBytes
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// A push (here: 2 MiB written straight into the repository) is recorded by the usage
	// recorder as a new lastPushTime.
	pack := filepath.Join(project.Status.RepositoryPath, "objects", "pack", "pack-x.pack")
	g.Expect(os.WriteFile(pack, make([]byte, 2<<20), 0o644)).To(Succeed())
	pushed := project.DeepCopy()
	pushed.Status.LastPushTime = ptr.To(metav1.Now())
	g.Expect(env.Client.Status().Patch(ctx, pushed, client.MergeFrom(project))).To(Succeed())
	g.Eventually(func(g Gomega) {
		repo, within := get(g)
		g.Expect(repo.SizeBytes).To(Equal(empty + 2<<20))
		g.Expect(repo.Size).To(Equal("2 MiB"))
		g.Expect(within.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(within.Reason).To(Equal(gitsshv1alpha1.ReasonOverQuota))
		g.Expect(within.Message).To(Equal("uses 2 MiB of its 1 MiB quota; pushes are refused until it is below: raise spec.quota"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	// Events are written asynchronously by the broadcaster.
	g.Eventually(func(g Gomega) []string { return eventTypesAndReasons(g, ns, project.Name) }).
		WithTimeout(20 * time.Second).Should(ContainElement("Warning OverQuota"))
	g.Expect(eventTypesAndReasons(g, ns, project.Name)).NotTo(ContainElement("Normal WithinQuota"), "getting a quota is no event")

	raised := project.DeepCopy()
	raised.Spec.Quota = ptr.To(resource.MustParse("3Mi"))
	g.Expect(env.Client.Patch(ctx, raised, client.MergeFrom(project))).To(Succeed())
	g.Eventually(func(g Gomega) {
		_, within := get(g)
		g.Expect(within.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(within.Message).To(Equal("uses 2 MiB of its 3 MiB quota"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return eventTypesAndReasons(g, ns, project.Name) }).
		WithTimeout(20 * time.Second).Should(ContainElement("Normal WithinQuota"))

	// Without a quota there is no condition, and still a size.
	unlimited := project.DeepCopy()
	unlimited.Spec.Quota = nil
	g.Expect(env.Client.Patch(ctx, unlimited, client.MergeFrom(project))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(project), project)).To(Succeed())
		g.Expect(meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)).To(BeNil())
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Expect(project.Status.Repository.SizeBytes).To(Equal(empty + 2<<20))
}

// eventTypesAndReasons lists "TYPE REASON" of the events about the object named name.
func eventTypesAndReasons(g Gomega, ns, name string) []string {
	var list corev1.EventList // events.k8s.io events are readable as core/v1 events
	g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var found []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			found = append(found, e.Type+" "+e.Reason)
		}
	}
	return found
}

func TestCloneURL(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
		want string
	}{
		{"git.example.com", 22, "ssh://git@git.example.com/acme/api.git"},
		{"git.example.com", 2222, "ssh://git@git.example.com:2222/acme/api.git"},
		{"203.0.113.7", 22, "ssh://git@203.0.113.7/acme/api.git"},
		{"2001:db8::1", 22, "ssh://git@[2001:db8::1]/acme/api.git"},
		{"2001:db8::1", 2222, "ssh://git@[2001:db8::1]:2222/acme/api.git"},
	} {
		NewWithT(t).Expect(controllers.CloneURL("git", tc.host, tc.port, "acme", "api")).To(Equal(tc.want))
	}
}
