package manifests_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/testenv"
)

// TestChartRunsGitssh runs the real gitssh binary the way the chart's Deployment does: with
// the rendered args, as the chart's ServiceAccount bound by the chart's Role (impersonated
// against the real API server). It proves that every flag the chart passes exists; that
// the Role, which reads only gitssh's own Secret, is enough to create the host key Secret
// on first start, watch the trusted user CA ConfigMap, become ready, publish the host key,
// provision a project and, restarted, serve the same keys; that it denies every other
// Secret of the namespace; and that the
// `helm test` hook's script accepts the served host key and rejects another.
func TestChartRunsGitssh(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := env.Namespace(t)

	out, err := run(ctx, nil, helm(t), "template", "gitssh", chartDir, "--namespace", ns, "--set", "crds.enabled=false",
		"--set", "ssh.trustedUserCAKeys=gitssh-user-cas")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)
	var rbac manifest
	for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding", "Service"} {
		rbac = append(rbac, m.one(t, kind, "gitssh"))
	}
	applied, err := kubectl(t, rbac.yaml(t), "apply", "--server-side", "-n", ns, "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), string(applied))
	// Someone else's Secret, ConfigMap and Service in the same namespace.
	for _, obj := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "database", Namespace: ns}, StringData: map[string]string{"password": "hunter2"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: ns}},
		// The trusted user CAs, which the Role lets gitssh read by name.
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gitssh-user-cas", Namespace: ns},
			Data: map[string]string{"trusted_user_ca_keys": newPublicKey(t) + " ca@example.com\n"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "database", Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}},
	} {
		g.Expect(env.Client.Create(ctx, obj)).To(Succeed())
	}

	// A kubeconfig that acts as the chart's ServiceAccount.
	kubeconfig, err := clientcmd.LoadFromFile(env.KubeconfigPath)
	g.Expect(err).NotTo(HaveOccurred())
	for _, auth := range kubeconfig.AuthInfos {
		auth.Impersonate = "system:serviceaccount:" + ns + ":gitssh"
	}
	saKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	g.Expect(clientcmd.WriteToFile(*kubeconfig, saKubeconfig)).To(Succeed())

	binary := filepath.Join(t.TempDir(), "gitssh")
	built, err := run(ctx, nil, "go", "build", "-o", binary, ".")
	g.Expect(err).NotTo(HaveOccurred(), string(built))

	// The chart's args, then the few that differ outside a pod (the last value wins).
	deploy := m.one(t, "Deployment", "gitssh")
	var chartArgs []string
	// The kubelet expands $(VAR) in args; these are what the Downward API gives a container
	// with limits of 2 CPUs and 1Gi.
	downward := strings.NewReplacer("$(GITSSH_CPU_LIMIT_MILLICORES)", "2000", "$(GITSSH_MEMORY_LIMIT)", "1073741824")
	for _, a := range container(t, deploy)["args"].([]any) {
		chartArgs = append(chartArgs, downward.Replace(a.(string)))
	}
	repoRoot := t.TempDir()
	var sshPort int
	start := func() *gitsshProcess {
		var p *gitsshProcess
		testenv.RetryOnAddrInUse(t, func() error {
			var healthPort int
			sshPort, healthPort = testenv.FreePort(t), testenv.FreePort(t)
			args := append(slices.Clone(chartArgs),
				fmt.Sprintf("--ssh-addr=127.0.0.1:%d", sshPort),
				fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", healthPort),
				"--metrics-bind-address=0",
				"--repo-root="+repoRoot,
				"--ssh-public-host=127.0.0.1", fmt.Sprintf("--ssh-public-port=%d", sshPort),
				"--kubeconfig="+saKubeconfig,
			)
			p = startGitssh(t, binary, args, "POD_NAMESPACE="+ns, "KUBECONFIG="+saKubeconfig)
			return p.waitReady(t, healthPort)
		})
		return p
	}
	first := start()
	hostKeys := &corev1.Secret{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gitssh-host-keys"}, hostKeys)).To(Succeed())
	g.Expect(hostKeys.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "gitssh"), "created by gitssh")

	// The leader publishes the host key, and provisions a project: the Role suffices.
	var cm corev1.ConfigMap
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gitssh-host-keys-known-hosts"}, &cm)).To(Succeed())
		g.Expect(cm.Data["fingerprints"]).To(ContainSubstring("SHA256:"))
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	project := &gitsshv1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: ns},
		Spec:       gitsshv1alpha1.GitProjectSpec{Owner: "demo", Project: "hello"},
	}
	g.Expect(env.Client.Create(ctx, project)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello"}, project)).To(Succeed())
		g.Expect(apimeta.IsStatusConditionTrue(project.Status.Conditions, "Ready")).To(BeTrue(), "%+v", project.Status.Conditions)
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

	// The `helm test` hook's script, run here against the real server with real ssh-keyscan.
	hook := nested(t, m.one(t, "Pod", "gitssh-test-host-key"), "spec", "containers").([]any)[0].(map[string]any)
	script := hook["command"].([]any)
	g.Expect(script[:2]).To(Equal([]any{"/bin/sh", "-ec"}))
	// The Service's address from the variable Kubernetes sets for the Service "gitssh".
	g.Expect(hook["env"]).To(ContainElement(map[string]any{"name": "GITSSH_HOST", "value": "$(GITSSH_SERVICE_HOST)"}))
	runHook := func(fingerprints string) (string, error) {
		file := filepath.Join(t.TempDir(), "fingerprints")
		g.Expect(os.WriteFile(file, []byte(fingerprints), 0o600)).To(Succeed())
		hookCmd := exec.CommandContext(ctx, "/bin/sh", "-ec", script[2].(string))
		hookCmd.Env = append(os.Environ(), "GITSSH_HOST=127.0.0.1", fmt.Sprintf("GITSSH_PORT=%d", sshPort), "FINGERPRINTS="+file)
		out, err := hookCmd.CombinedOutput()
		return string(out), err
	}
	hookOut, err := runHook(cm.Data["fingerprints"])
	g.Expect(err).NotTo(HaveOccurred(), hookOut)
	g.Expect(hookOut).To(ContainSubstring("OK: the SSH port answers with the published host keys"))

	other := strings.Replace(cm.Data["fingerprints"], "SHA256:", "SHA256:x", 1)
	hookOut, err = runHook(other)
	g.Expect(err).To(HaveOccurred(), hookOut)
	g.Expect(hookOut).To(ContainSubstring("FAIL"))
	hookOut, err = runHook("")
	g.Expect(err).To(HaveOccurred(), "an empty ConfigMap must not pass:\n%s", hookOut)

	// The same rights as the running gitssh, tried directly: its own objects by name, no other.
	saConfig := rest.CopyConfig(env.Config)
	saConfig.Impersonate.UserName = "system:serviceaccount:" + ns + ":gitssh"
	sa, err := client.NewWithWatch(saConfig, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }
	byName := func(name string) client.ListOption { return client.MatchingFields{"metadata.name": name} }
	watch := func(list client.ObjectList, opts ...client.ListOption) error {
		w, err := sa.Watch(ctx, list, append(opts, client.InNamespace(ns))...)
		if err == nil {
			w.Stop()
		}
		return err
	}
	for _, tt := range []struct {
		what    string
		do      func() error
		allowed bool
	}{
		{"get the host key Secret", func() error { return sa.Get(ctx, key("gitssh-host-keys"), &corev1.Secret{}) }, true},
		{"list the host key Secret by name", func() error {
			return sa.List(ctx, &corev1.SecretList{}, client.InNamespace(ns), byName("gitssh-host-keys"))
		}, true},
		{"watch the host key Secret by name", func() error { return watch(&corev1.SecretList{}, byName("gitssh-host-keys")) }, true},
		{"get another Secret", func() error { return sa.Get(ctx, key("database"), &corev1.Secret{}) }, false},
		{"list another Secret by name", func() error {
			return sa.List(ctx, &corev1.SecretList{}, client.InNamespace(ns), byName("database"))
		}, false},
		{"list the namespace's Secrets", func() error { return sa.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)) }, false},
		{"watch the namespace's Secrets", func() error { return watch(&corev1.SecretList{}) }, false},
		{"overwrite the host key Secret", func() error { return sa.Update(ctx, hostKeys.DeepCopy()) }, false},
		{"delete the host key Secret", func() error { return sa.Delete(ctx, hostKeys.DeepCopy()) }, false},
		// The one grant resourceNames cannot narrow: a create names no object when it is
		// authorized. It reads nothing back.
		{"create a Secret", func() error {
			return sa.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "created-by-gitssh", Namespace: ns}})
		}, true},
		{"get another ConfigMap", func() error { return sa.Get(ctx, key("settings"), &corev1.ConfigMap{}) }, false},
		{"watch the trusted user CA ConfigMap by name", func() error {
			return watch(&corev1.ConfigMapList{}, byName("gitssh-user-cas"))
		}, true},
		{"change the trusted user CA ConfigMap", func() error {
			return sa.Apply(ctx, corev1ac.ConfigMap("gitssh-user-cas", ns).WithData(map[string]string{"trusted_user_ca_keys": ""}),
				client.FieldOwner("gitssh-test"), client.ForceOwnership)
		}, false},
		{"list the namespace's ConfigMaps", func() error { return sa.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns)) }, false},
		{"create a ConfigMap by server-side apply", func() error {
			return sa.Apply(ctx, corev1ac.ConfigMap("planted", ns), client.FieldOwner("gitssh-test"))
		}, false},
		{"get another Service", func() error { return sa.Get(ctx, key("database"), &corev1.Service{}) }, false},
		// The first start created and holds its Lease; renewing it is an update by name.
		{"get the leader Lease", func() error { return sa.Get(ctx, key("gitssh-leader"), &coordinationv1.Lease{}) }, true},
		{"get another Lease", func() error { return sa.Get(ctx, key("other-leader"), &coordinationv1.Lease{}) }, false},
		{"list the namespace's Leases", func() error { return sa.List(ctx, &coordinationv1.LeaseList{}, client.InNamespace(ns)) }, false},
	} {
		err := tt.do()
		if tt.allowed {
			g.Expect(err).NotTo(HaveOccurred(), "the ServiceAccount must be allowed to %s", tt.what)
		} else {
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "the ServiceAccount must not be allowed to %s; got %v", tt.what, err)
		}
	}

	// A restart reads the Secret the first start created, and serves the same keys.
	lease := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(ctx, key("gitssh-leader"), lease)).To(Succeed())
	firstLeader := ptr.Deref(lease.Spec.HolderIdentity, "")
	g.Expect(firstLeader).NotTo(BeEmpty())
	logs := first.stop()
	g.Expect(logs).To(ContainSubstring("Generated host keys and stored them"))
	g.Expect(logs).To(ContainSubstring("Loaded trusted user CAs"), "the Role must let gitssh watch the CA ConfigMap")
	// A leader that stops releases its Lease (an update by name), so another takes over at once.
	g.Expect(env.Client.Get(ctx, key("gitssh-leader"), lease)).To(Succeed())
	g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(BeEmpty(), "the stopped leader must release its Lease")
	second := start()
	// Taking over the Lease the first start left is an update by name: the Role allows it.
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, key("gitssh-leader"), lease)).To(Succeed())
		g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).NotTo(BeElementOf("", firstLeader))
	}).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(),
		"the restarted gitssh must take over the released leader Lease")
	hookOut, err = runHook(cm.Data["fingerprints"])
	g.Expect(err).NotTo(HaveOccurred(), hookOut)
	logs = second.stop()
	g.Expect(logs).To(ContainSubstring("Loaded host keys"))
	g.Expect(logs).NotTo(ContainSubstring("Generated host keys"))
}

// gitsshProcess is the gitssh binary, running until stop.
type gitsshProcess struct {
	cancel   context.CancelFunc
	exited   chan error
	stopOnce sync.Once
	// logs is written by the process while it runs: read it only once it has exited.
	logs bytes.Buffer
}

// startGitssh starts binary with args and extra environment variables; the test's end
// stops it, printing its logs if the test failed.
func startGitssh(t *testing.T, binary string, args []string, env ...string) *gitsshProcess {
	t.Helper()
	runCtx, cancel := context.WithCancel(context.Background())
	p := &gitsshProcess{cancel: cancel, exited: make(chan error, 1)}
	cmd := exec.CommandContext(runCtx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &p.logs, &p.logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 40 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		logs := p.stop()
		if t.Failed() {
			t.Logf("gitssh logs:\n%s", logs)
		}
	})
	return p
}

// waitReady waits until /readyz answers OK: the host keys are loaded, the caches synced
// and the SSH server serves. If gitssh exits first, it returns why, with its logs.
func (p *gitsshProcess) waitReady(t *testing.T, healthPort int) error {
	t.Helper()
	var exited error
	NewWithT(t).Eventually(func(g Gomega) {
		select {
		case err := <-p.exited:
			p.exited <- err
			exited = fmt.Errorf("gitssh exited (%v) with the chart's args:\n%s", err, p.logs.String())
			return
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).WithTimeout(90 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	return exited
}

// stop interrupts gitssh, waits for it to exit and returns its logs.
func (p *gitsshProcess) stop() string {
	p.stopOnce.Do(func() {
		p.cancel()
		err := <-p.exited
		p.exited <- err
	})
	return p.logs.String()
}
