package controllers_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

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

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Logger:                 testr.New(t),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	g.Expect(controllers.SetupIndexes(ctx, mgr)).To(Succeed())
	store := repostore.Store{Root: t.TempDir()}
	g.Expect((&controllers.GitProjectReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("test"), Store: store,
		SSHUser: "git", Endpoint: endpoint, Serving: serving.Load,
	}).SetupWithManager(mgr)).To(Succeed())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

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
