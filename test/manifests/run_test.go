package manifests_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// TestChartRunsGitssh runs the real gitssh binary the way the chart's Deployment does: with
// the rendered args, as the chart's ServiceAccount bound by the chart's Role (impersonated
// against the real API server). It proves that every flag the chart passes exists, that
// the Role is enough to become ready, publish the host key and provision a project, and
// that the `helm test` hook's script accepts the served host key and rejects another.
func TestChartRunsGitssh(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := env.Namespace(t)

	out, err := run(ctx, nil, helm(t), "template", "gitssh", chartDir, "--namespace", ns, "--set", "crds.enabled=false")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)
	var rbac manifest
	for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding", "Service"} {
		rbac = append(rbac, m.one(t, kind, "gitssh"))
	}
	applied, err := kubectl(t, rbac.yaml(t), "apply", "--server-side", "-n", ns, "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), string(applied))

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
	sshPort, healthPort := freePort(t), freePort(t)
	deploy := m.one(t, "Deployment", "gitssh")
	var args []string
	for _, a := range container(t, deploy)["args"].([]any) {
		args = append(args, a.(string))
	}
	args = append(args,
		fmt.Sprintf("--ssh-addr=127.0.0.1:%d", sshPort),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", healthPort),
		"--metrics-bind-address=0",
		"--repo-root="+t.TempDir(),
		"--ssh-public-host=127.0.0.1", fmt.Sprintf("--ssh-public-port=%d", sshPort),
		"--kubeconfig="+saKubeconfig,
	)
	runCtx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(runCtx, binary, args...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns, "KUBECONFIG="+saKubeconfig)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 40 * time.Second
	g.Expect(cmd.Start()).To(Succeed())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("gitssh logs:\n%s", logs.String())
		}
	})

	// Ready: the host keys are loaded, the caches synced and the SSH server serves.
	g.Eventually(func(g Gomega) {
		select {
		case err := <-exited:
			exited <- err
			g.Expect(err).NotTo(HaveOccurred(), "gitssh exited with the chart's args:\n%s", logs.String())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).WithTimeout(90 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

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
	g.Expect(hook["env"]).To(ContainElement(map[string]any{"name": "GITSSH_HOST", "value": "gitssh." + ns + ".svc"}))
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
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
