package app_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// Two replicas starting at once against an empty namespace end with one host key Secret,
// and both serve the same host keys.
func TestTwoReplicasStartingAtOnceServeOneHostKey(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	repoRoot := t.TempDir()
	var ports []int
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 2)
	for range 2 {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		g.Expect(err).NotTo(HaveOccurred())
		ports = append(ports, listener.Addr().(*net.TCPAddr).Port)
		go func() {
			stopped <- app.Run(ctx, env.Config, app.Options{
				Namespace: ns, Listener: listener, PublicHost: "127.0.0.1", PublicPort: 22,
				RepoRoot: repoRoot, HostKeySecret: hostKeySecret,
				LeaderElection: true, LeaderElectionID: "gitssh-leader",
				MetricsAddr: "0", HealthProbeAddr: "0", SkipControllerNameValidation: true,
			}, zap.New(zap.WriteTo(testWriter{t})))
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			<-stopped
		}
	})

	var secret corev1.Secret
	g.Eventually(func() error {
		return env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: hostKeySecret}, &secret)
	}).WithTimeout(eventually).Should(Succeed())
	for _, algorithm := range []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA512} {
		var served []string
		for _, port := range ports {
			var fingerprint string
			g.Eventually(func() string {
				fingerprint = servedHostKey(port, algorithm)
				return fingerprint
			}).WithTimeout(eventually).ShouldNot(BeEmpty())
			served = append(served, fingerprint)
		}
		g.Expect(served[0]).To(Equal(served[1]), "the two replicas serve different %s host keys", algorithm)
	}
	var secrets corev1.SecretList
	g.Expect(env.Client.List(context.Background(), &secrets, client.InNamespace(ns))).To(Succeed())
	g.Expect(secrets.Items).To(HaveLen(1))
}

// servedHostKey returns the fingerprint of the host key the server at port shows for
// algorithm, or "" when it does not answer.
func servedHostKey(port int, algorithm string) string {
	var fingerprint string
	_, _ = ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &ssh.ClientConfig{
		User:              "git",
		HostKeyAlgorithms: []string{algorithm},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			fingerprint = ssh.FingerprintSHA256(key)
			return errors.New("host key captured; no need to log in")
		},
		Timeout: 5 * time.Second,
	})
	return fingerprint
}

// The SSH server serves, and /readyz says ready, only once every cache of the pod has
// synced, the leader-only known-hosts controller's too (the host key Secret and its
// ConfigMap): while gitssh may not watch ConfigMaps it does not serve; once it may, it does.
func TestServingWaitsForTheKnownHostsCaches(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := env.Namespace(t)
	user := "gitssh-" + ns
	grant := func(name string, rules ...rbacv1.PolicyRule) {
		g.Expect(env.Client.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules})).To(Succeed())
		g.Expect(env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}})).To(Succeed())
	}
	// Everything gitssh needs in this test but ConfigMaps.
	grant("gitssh",
		rbacv1.PolicyRule{APIGroups: []string{gitsshv1alpha1.GroupVersion.Group}, Resources: []string{"*"}, Verbs: []string{"*"}},
		rbacv1.PolicyRule{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"secrets", "events"}, Verbs: []string{"*"}})
	restConfig := rest.CopyConfig(env.Config)
	restConfig.Impersonate.UserName = user

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(runCtx, restConfig, app.Options{
			Namespace: ns, Listener: listener, PublicHost: "127.0.0.1", PublicPort: listener.Addr().(*net.TCPAddr).Port,
			RepoRoot: t.TempDir(), HostKeySecret: hostKeySecret,
			MetricsAddr: "0", HealthProbeAddr: "0", SkipControllerNameValidation: true,
		}, zap.New(zap.WriteTo(testWriter{t})))
	}()
	t.Cleanup(func() { cancel(); <-done })
	// Serving: the server sends its version line.
	serving := func() bool {
		c, err := net.DialTimeout("tcp", listener.Addr().String(), time.Second)
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && strings.HasPrefix(line, "SSH-2.0-")
	}
	// Long enough for the host keys, the keys and the projects, which it may read, to load.
	g.Consistently(serving).WithTimeout(8 * time.Second).WithPolling(500 * time.Millisecond).Should(BeFalse())

	grant("gitssh-configmaps", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}})
	// The reflector retries its list with a backoff of up to 30 s.
	g.Eventually(serving).WithTimeout(90 * time.Second).WithPolling(500 * time.Millisecond).Should(BeTrue())
}
