package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/internal/testenv"
	"github.com/gitssh-dev/gitssh/sshserver"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

const hostKeySecret = "gitssh-host-keys"

// instance is one running gitssh process (app.Run) serving SSH on 127.0.0.1.
type instance struct {
	namespace  string
	port       int
	repoRoot   string
	knownHosts string // a known_hosts file written from the published ConfigMap
	opts       app.Options
	stop       func() error
	log        *logBuffer
}

// startGitssh runs app.Run as main.go would, in namespace ns, and waits until the SSH
// server serves and the host key ConfigMap is published. configure, if any, changes the
// options first.
func startGitssh(t testing.TB, ns, repoRoot string, configure ...func(*app.Options)) *instance {
	t.Helper()
	return startGitsshOn(t, ns, repoRoot, 0, configure...)
}

// startGitsshOn is startGitssh on a given port (0: any free one); configure may change
// the options first.
func startGitsshOn(t testing.TB, ns, repoRoot string, port int, configure ...func(*app.Options)) *instance {
	t.Helper()
	inst, err := tryStartGitsshOn(t, ns, repoRoot, port, configure...)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return inst
}

// tryStartGitsshOn is startGitsshOn, but returns Run's error if gitssh stops before it
// serves.
func tryStartGitsshOn(t testing.TB, ns, repoRoot string, port int, configure ...func(*app.Options)) (*instance, error) {
	t.Helper()
	g := NewWithT(t)
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	g.Expect(err).NotTo(HaveOccurred())
	port = listener.Addr().(*net.TCPAddr).Port

	opts := app.Options{
		Namespace:     ns,
		Listener:      listener,
		SSH:           sshserver.Config{ShutdownGracePeriod: 5 * time.Second},
		PublicHost:    "127.0.0.1",
		PublicPort:    port,
		RepoRoot:      repoRoot,
		HostKeySecret: hostKeySecret,
		// Short, so that usage times show up quickly in tests.
		UsageFlushInterval: time.Second,
		MetricsAddr:        "0", HealthProbeAddr: "0",
		SkipControllerNameValidation: true,
	}
	for _, f := range configure {
		f(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &logBuffer{}
	go func() {
		done <- app.Run(ctx, env.Config, opts, zap.New(zap.UseDevMode(true), zap.WriteTo(io.MultiWriter(testWriter{t}, logs))))
	}()
	stopped := false
	inst := &instance{namespace: ns, port: port, repoRoot: repoRoot, opts: opts, log: logs}
	inst.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("gitssh did not stop within 30s")
		}
	}
	t.Cleanup(func() { _ = inst.stop() })

	// The published known_hosts must name this server; a client pins it with
	// StrictHostKeyChecking=yes, so every ssh in these tests also checks the host key.
	inst.knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	var runErr error
	g.Eventually(func(g Gomega) {
		select {
		case err := <-done:
			runErr = fmt.Errorf("gitssh stopped: %w", err)
			done <- err // for inst.stop
			return
		default:
		}
		var cm corev1.ConfigMap
		g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: hostKeySecret + "-known-hosts"}, &cm)).To(Succeed())
		g.Expect(cm.Data["known_hosts"]).To(ContainSubstring(fmt.Sprintf("[127.0.0.1]:%d ", port)))
		g.Expect(os.WriteFile(inst.knownHosts, []byte(cm.Data["known_hosts"]), 0o600)).To(Succeed())
	}).WithTimeout(60 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	return inst, runErr
}

// testWriter sends gitssh's logs to the test log, shown only when a test fails.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logBuffer keeps gitssh's logs for tests that check what it says.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log lines that contain every one of substrings.
func (b *logBuffer) lines(substrings ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, line := range strings.Split(b.buf.String(), "\n") {
		if containsAll(line, substrings) {
			out = append(out, line)
		}
	}
	return out
}

func containsAll(s string, substrings []string) bool {
	for _, sub := range substrings {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// userKey is an ed25519 key pair made with the real ssh-keygen.
type userKey struct {
	path      string // private key file
	publicKey string // authorized_keys line
}

func newUserKey(t testing.TB, name string) userKey {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return userKey{path: path, publicKey: strings.TrimSpace(string(pub))}
}

// git runs the real git, talking to gitssh through the real ssh with key.
func (inst *instance) git(key userKey, dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_SSH_COMMAND="+inst.sshCommand(key),
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
	)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (inst *instance) sshCommand(key userKey) string {
	return fmt.Sprintf("ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=10",
		key.path, inst.knownHosts)
}

func (inst *instance) url(owner, project string) string {
	return fmt.Sprintf("ssh://git@127.0.0.1:%d/%s/%s.git", inst.port, owner, project)
}

func createKey(t testing.TB, ns, name, user, publicKey string) *gitsshv1alpha1.SSHPublicKey {
	t.Helper()
	return createKeySpec(t, ns, name, gitsshv1alpha1.SSHPublicKeySpec{User: user, PublicKey: publicKey})
}

func createKeySpec(t testing.TB, ns, name string, spec gitsshv1alpha1.SSHPublicKeySpec) *gitsshv1alpha1.SSHPublicKey {
	t.Helper()
	key := &gitsshv1alpha1.SSHPublicKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
	NewWithT(t).Expect(env.Client.Create(context.Background(), key)).To(Succeed())
	return key
}

func createProject(t testing.TB, ns, name string, spec gitsshv1alpha1.GitProjectSpec) *gitsshv1alpha1.GitProject {
	t.Helper()
	project := &gitsshv1alpha1.GitProject{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
	NewWithT(t).Expect(env.Client.Create(context.Background(), project)).To(Succeed())
	return project
}

// readyCondition returns the Ready condition of obj as the API server has it.
func readyCondition(g Gomega, obj client.Object) metav1.Condition {
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	var conditions []metav1.Condition
	switch o := obj.(type) {
	case *gitsshv1alpha1.SSHPublicKey:
		conditions = o.Status.Conditions
	case *gitsshv1alpha1.GitProject:
		conditions = o.Status.Conditions
	}
	for _, c := range conditions {
		if c.Type == gitsshv1alpha1.ConditionReady {
			return c
		}
	}
	return metav1.Condition{}
}
