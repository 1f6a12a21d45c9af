package controllers_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/hostkeys"
	"github.com/gitssh-dev/gitssh/sshserver"
)

const hostKeySecretName = "gitssh-host-keys"

func TestHostKeySecretCreatedOnceByConcurrentStarts(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	ref := types.NamespacedName{Namespace: ns, Name: hostKeySecretName}

	// Two replicas starting at once, each with its own client. Both found no
	// Secret: they Create at the same moment, and one must lose.
	var wg sync.WaitGroup
	var bothCreating sync.WaitGroup
	bothCreating.Add(2)
	fingerprints := make([][]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		own, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
		g.Expect(err).NotTo(HaveOccurred())
		c := interceptor.NewClient(own, interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				bothCreating.Done()
				bothCreating.Wait()
				return c.Create(ctx, obj, opts...)
			},
		})
		wg.Go(func() {
			signers, err := controllers.LoadOrCreateHostKeys(ctx, c, ref, testr.New(t))
			fingerprints[i], errs[i] = hostkeys.Fingerprints(signers), err
		})
	}
	wg.Wait()
	g.Expect(errs).To(HaveEach(Not(HaveOccurred())))
	g.Expect(fingerprints[0]).To(HaveLen(3))
	g.Expect(fingerprints[1]).To(Equal(fingerprints[0]), "both replicas must serve the same host keys")

	secrets := &corev1.SecretList{}
	g.Expect(env.Client.List(ctx, secrets, client.InNamespace(ns))).To(Succeed())
	g.Expect(secrets.Items).To(HaveLen(1))
	s := secrets.Items[0]
	g.Expect(s.Name).To(Equal(hostKeySecretName))
	g.Expect(s.Type).To(Equal(corev1.SecretTypeOpaque))
	g.Expect(s.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "gitssh"))
	g.Expect(s.Annotations).To(HaveKeyWithValue("gitssh.dev/host-keys", ContainSubstring("Do not delete")))
	g.Expect(s.OwnerReferences).To(BeEmpty(), "the Secret must outlive the Helm release")
	g.Expect(s.Data).To(HaveKey(hostkeys.ED25519))
	g.Expect(s.Data).To(HaveKey(hostkeys.ECDSA))
	g.Expect(s.Data).To(HaveKey(hostkeys.RSA))

	// A restart reads the same keys and writes nothing.
	signers, err := controllers.LoadOrCreateHostKeys(ctx, env.Client, ref, testr.New(t))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hostkeys.Fingerprints(signers)).To(Equal(fingerprints[0]))
	after := &corev1.Secret{}
	g.Expect(env.Client.Get(ctx, ref, after)).To(Succeed())
	g.Expect(after.ResourceVersion).To(Equal(s.ResourceVersion))
}

func TestLoadOrCreateHostKeysUsesExistingSecret(t *testing.T) {
	generated, err := hostkeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(edKey, "")
	if err != nil {
		t.Fatal(err)
	}
	edSigner, err := ssh.NewSignerFromKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	corrupted := map[string][]byte{}
	for k, v := range generated {
		corrupted[k] = v
	}
	corrupted[hostkeys.RSA] = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n")

	tests := []struct {
		name string
		data map[string][]byte
		// Either the fingerprints returned or the substrings of the error.
		wantFingerprints []string
		wantErr          []string
	}{{
		name:             "only ed25519 from an existing server",
		data:             map[string][]byte{hostkeys.ED25519: pem.EncodeToMemory(block), hostkeys.ED25519 + ".pub": ssh.MarshalAuthorizedKey(edSigner.PublicKey())},
		wantFingerprints: []string{"ssh-ed25519 " + ssh.FingerprintSHA256(edSigner.PublicKey())},
	}, {
		name:    "one key replaced by garbage",
		data:    corrupted,
		wantErr: []string{"host key Secret NS/" + hostKeySecretName, hostkeys.RSA + " does not parse", "fix or delete the Secret"},
	}, {
		name:    "no keys",
		data:    map[string][]byte{"unrelated": []byte("x")},
		wantErr: []string{"host key Secret NS/" + hostKeySecretName + " holds no host keys", hostkeys.ED25519},
	}, {
		name:    "empty",
		wantErr: []string{"host key Secret NS/" + hostKeySecretName + " holds no host keys"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			ns := env.Namespace(t)
			pre := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: hostKeySecretName},
				Data:       tt.data,
			}
			g.Expect(env.Client.Create(ctx, pre)).To(Succeed())

			signers, err := controllers.LoadOrCreateHostKeys(ctx, env.Client, client.ObjectKeyFromObject(pre), testr.New(t))
			if tt.wantErr != nil {
				g.Expect(err).To(HaveOccurred())
				t.Log(err)
				for _, want := range tt.wantErr {
					g.Expect(err.Error()).To(ContainSubstring(strings.ReplaceAll(want, "NS/", ns+"/")))
				}
			} else {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(hostkeys.Fingerprints(signers)).To(Equal(tt.wantFingerprints))
			}

			// Never overwritten, never regenerated.
			after := &corev1.Secret{}
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(pre), after)).To(Succeed())
			g.Expect(after.ResourceVersion).To(Equal(pre.ResourceVersion))
			g.Expect(after.Data).To(Equal(pre.Data))
		})
	}
}

// endpoint is a settable KnownHostsReconciler.Endpoint.
type endpoint struct{ port atomic.Int32 }

func (e *endpoint) get() (string, int, bool) {
	p := int(e.port.Load())
	return "127.0.0.1", p, p != 0
}

// startKnownHostsController runs a manager in ns with the KnownHostsReconciler.
func startKnownHostsController(t *testing.T, ns string, ep *endpoint) {
	t.Helper()
	startManager(t, ns, func(mgr ctrl.Manager) error {
		return (&controllers.KnownHostsReconciler{
			Client:   mgr.GetClient(),
			Secret:   types.NamespacedName{Namespace: ns, Name: hostKeySecretName},
			Endpoint: ep.get,
		}).SetupWithManager(mgr)
	})
}

func knownHostsConfigMap(g Gomega, ns string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(context.Background(),
		types.NamespacedName{Namespace: ns, Name: controllers.KnownHostsConfigMapName(hostKeySecretName)}, cm)).To(Succeed())
	return cm
}

func requireTools(t *testing.T, tools ...string) {
	for _, bin := range tools {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
}

func TestKnownHostsReconcilerPublishesHostKeys(t *testing.T) {
	requireTools(t, "ssh-keygen")
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	signers, err := controllers.LoadOrCreateHostKeys(ctx, env.Client,
		types.NamespacedName{Namespace: ns, Name: hostKeySecretName}, testr.New(t))
	g.Expect(err).NotTo(HaveOccurred())
	wantFingerprints := strings.Join(hostkeys.Fingerprints(signers), "\n") + "\n"

	ep := &endpoint{}
	startKnownHostsController(t, ns, ep)

	// No endpoint yet: the fingerprints, and no known_hosts line to trust.
	g.Eventually(func(g Gomega) {
		cm := knownHostsConfigMap(g, ns)
		g.Expect(cm.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "gitssh"))
		g.Expect(cm.Data).To(HaveKeyWithValue("fingerprints", wantFingerprints))
		g.Expect(cm.Data).To(HaveKeyWithValue("known_hosts", ""))
	}).Should(Succeed())

	// The endpoint appears; the reconciler polls it.
	ep.port.Store(2222)
	var published *corev1.ConfigMap
	g.Eventually(func(g Gomega) {
		published = knownHostsConfigMap(g, ns)
		g.Expect(strings.Count(published.Data["known_hosts"], "\n")).To(Equal(3))
	}).WithTimeout(30 * time.Second).Should(Succeed())

	// Real ssh-keygen finds every key for the endpoint, with the published fingerprints.
	file := filepath.Join(t.TempDir(), "known_hosts")
	g.Expect(os.WriteFile(file, []byte(published.Data["known_hosts"]), 0o600)).To(Succeed())
	out, err := exec.Command("ssh-keygen", "-F", "[127.0.0.1]:2222", "-f", file).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	g.Expect(strings.Count(string(out), "\n[127.0.0.1]:2222 ")).To(Equal(3), string(out))
	out, err = exec.Command("ssh-keygen", "-l", "-f", file).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	for _, fp := range hostkeys.Fingerprints(signers) {
		g.Expect(string(out)).To(ContainSubstring(strings.Fields(fp)[1]+" [127.0.0.1]:2222"), string(out))
	}

	// Deleted: it comes back.
	g.Expect(env.Client.Delete(ctx, published)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cm := knownHostsConfigMap(g, ns)
		g.Expect(cm.UID).NotTo(Equal(published.UID))
		g.Expect(cm.Data).To(Equal(published.Data))
	}).Should(Succeed())

	// Edited by hand: corrected. Entries someone else added are theirs to keep.
	name := controllers.KnownHostsConfigMapName(hostKeySecretName)
	out2, err := env.Kubectl(ctx, "-n", ns, "patch", "configmap", name, "--type=merge",
		"-p", `{"metadata":{"labels":{"app.kubernetes.io/managed-by":"someone"}},"data":{"known_hosts":"[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil\n","extra":"kept"}}`)
	g.Expect(err).NotTo(HaveOccurred(), out2)
	g.Eventually(func(g Gomega) {
		cm := knownHostsConfigMap(g, ns)
		g.Expect(cm.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "gitssh"))
		g.Expect(cm.Data).To(HaveKeyWithValue("known_hosts", published.Data["known_hosts"]))
		g.Expect(cm.Data).To(HaveKeyWithValue("fingerprints", wantFingerprints))
		g.Expect(cm.Data).To(HaveKeyWithValue("extra", "kept"))
	}).Should(Succeed())

	// Port 22 is written without brackets. (Deleting the ConfigMap makes the
	// reconciler read the endpoint now rather than at its next poll.)
	ep.port.Store(22)
	g.Expect(env.Client.Delete(ctx, knownHostsConfigMap(g, ns))).To(Succeed())
	g.Eventually(func(g Gomega) {
		cm := knownHostsConfigMap(g, ns)
		g.Expect(cm.Data["known_hosts"]).To(MatchRegexp(`^(127\.0\.0\.1 \S+ \S+\n){3}$`))
	}).Should(Succeed())
}

// TestHostKeysPinnedByRealSSHSurviveRestart pins the published known_hosts in
// the real OpenSSH client and checks it still trusts the server after a restart.
func TestHostKeysPinnedByRealSSHSurviveRestart(t *testing.T) {
	requireTools(t, "ssh", "ssh-keygen")
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	dir := t.TempDir()
	ref := types.NamespacedName{Namespace: ns, Name: hostKeySecretName}
	clientKey := filepath.Join(dir, "id_ed25519")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))

	// First start: keys generated, server up, known_hosts published for its port.
	signers, err := controllers.LoadOrCreateHostKeys(ctx, env.Client, ref, testr.New(t))
	g.Expect(err).NotTo(HaveOccurred())
	stop, addr := startSSHServer(t, "127.0.0.1:0", signers)
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	ep := &endpoint{}
	ep.port.Store(int32(port))
	startKnownHostsController(t, ns, ep)
	var knownHosts string
	g.Eventually(func(g Gomega) {
		knownHosts = knownHostsConfigMap(g, ns).Data["known_hosts"]
		g.Expect(knownHosts).To(ContainSubstring("[127.0.0.1]:" + portStr + " ssh-ed25519 "))
	}).Should(Succeed())
	pinned := filepath.Join(dir, "known_hosts")
	g.Expect(os.WriteFile(pinned, []byte(knownHosts), 0o600)).To(Succeed())
	expectHostKeyAccepted(t, port, pinned, clientKey)

	// Negative control: keys the client has not pinned are refused.
	other, err := hostkeys.Generate()
	g.Expect(err).NotTo(HaveOccurred())
	otherSigners, err := hostkeys.Load(other)
	g.Expect(err).NotTo(HaveOccurred())
	wrong := filepath.Join(dir, "wrong_known_hosts")
	g.Expect(os.WriteFile(wrong, hostkeys.KnownHosts("[127.0.0.1]:"+portStr, otherSigners), 0o600)).To(Succeed())
	stderr := runSSH(t, port, wrong, clientKey)
	g.Expect(stderr).To(Or(ContainSubstring("Host key verification failed"), ContainSubstring("REMOTE HOST IDENTIFICATION HAS CHANGED")))

	// Restart on the same address: the same keys, trusted by the pinned file.
	stop()
	signers, err = controllers.LoadOrCreateHostKeys(ctx, env.Client, ref, testr.New(t))
	g.Expect(err).NotTo(HaveOccurred())
	startSSHServer(t, addr, signers)
	expectHostKeyAccepted(t, port, pinned, clientKey)
}

func startSSHServer(t *testing.T, addr string, signers []ssh.Signer) (stop func(), listening string) {
	t.Helper()
	srv, err := sshserver.New(sshserver.Config{}, signers, authorizer.New(), nil, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			if err := <-done; err != nil && !errors.Is(err, sshserver.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, l.Addr().String()
}

// runSSH runs the real OpenSSH client with strict host key checking against
// the known_hosts file only, and returns its stderr.
func runSSH(t *testing.T, port int, knownHosts, identity string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", identity,
		"-o", "ConnectTimeout=10", "-p", strconv.Itoa(port), "git@127.0.0.1", "git-upload-pack 'acme/api.git'")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return stderr.String()
}

// expectHostKeyAccepted: the client gets past host key verification; it is
// then refused, as its key is registered nowhere.
func expectHostKeyAccepted(t *testing.T, port int, knownHosts, identity string) {
	t.Helper()
	g := NewWithT(t)
	stderr := runSSH(t, port, knownHosts, identity)
	g.Expect(stderr).NotTo(ContainSubstring("Host key verification failed"))
	g.Expect(stderr).NotTo(ContainSubstring("REMOTE HOST IDENTIFICATION HAS CHANGED"))
	g.Expect(stderr).To(ContainSubstring("Permission denied (publickey)"))
}
