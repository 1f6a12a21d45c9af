package app_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
)

// A restarted gitssh serves the same host key: a client that pinned the first run's
// known_hosts connects with StrictHostKeyChecking=yes, and the data on disk is still served.
func TestRestartKeepsTheHostKeyAndTheRepositories(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	repoRoot := t.TempDir()
	first := startGitssh(t, ns, repoRoot)
	alice := newUserKey(t, "alice")
	createKey(t, ns, "alice", "alice", alice.publicKey)
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	g.Eventually(func() error { _, err := first.git(alice, "", "ls-remote", first.url("alice", "api")); return err }).
		WithTimeout(eventually).Should(Succeed())
	var secret corev1.Secret
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: hostKeySecret}, &secret)).To(Succeed())
	g.Expect(first.stop()).To(Succeed())

	second := startGitsshOn(t, ns, repoRoot, first.port)
	second.knownHosts = first.knownHosts
	out, err := second.git(alice, "", "ls-remote", second.url("alice", "api"))
	g.Expect(err).NotTo(HaveOccurred(), "the restarted server does not match the pinned host key: %s", out)

	var after corev1.Secret
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: hostKeySecret}, &after)).To(Succeed())
	g.Expect(after.ResourceVersion).To(Equal(secret.ResourceVersion), "the host key Secret was rewritten")
}

// A host key Secret that does not parse stops start-up with a message naming the bad key,
// and is left exactly as it was.
func TestCorruptHostKeySecretStopsStartup(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	corrupt := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: hostKeySecret, Namespace: ns},
		Data:       map[string][]byte{"ssh_host_ed25519_key": []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")},
	}
	g.Expect(env.Client.Create(ctx, corrupt)).To(Succeed())

	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := app.Run(runCtx, env.Config, app.Options{
		Namespace: ns, SSHAddr: "127.0.0.1:0", RepoRoot: t.TempDir(), HostKeySecret: hostKeySecret,
		MetricsAddr: "0", HealthProbeAddr: "0", SkipControllerNameValidation: true,
	}, zap.New(zap.WriteTo(testWriter{t})))
	g.Expect(err).To(HaveOccurred())
	g.Expect(runCtx.Err()).NotTo(HaveOccurred(), "Run did not return by itself")
	g.Expect(err.Error()).To(ContainSubstring("ssh_host_ed25519_key"))
	g.Expect(err.Error()).To(ContainSubstring(ns + "/" + hostKeySecret))

	var after corev1.Secret
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: hostKeySecret}, &after)).To(Succeed())
	g.Expect(after.ResourceVersion).To(Equal(corrupt.ResourceVersion))
	g.Expect(after.Data).To(Equal(corrupt.Data))
}
