// Package testenv starts the real control plane (etcd + kube-apiserver, built by
// hack/setup-envtest.sh) for a package's tests, with the gitssh CRDs installed, and gives
// each test a fresh namespace and a real kubectl.
//
// Use one Environment per test package, started in TestMain.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// Environment is a running control plane with the gitssh CRDs installed.
type Environment struct {
	env *envtest.Environment
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client (no cache) that knows the gitssh types.
	Client client.Client
	// Scheme knows the built-in and the gitssh types.
	Scheme *runtime.Scheme
	// KubeconfigPath is a kubeconfig file for the admin user, for kubectl and helm.
	KubeconfigPath string
	// AssetsDir holds kube-apiserver, etcd and kubectl.
	AssetsDir string
	// RepoRoot is the root of the gitssh source tree.
	RepoRoot string
}

// Start starts etcd and kube-apiserver and installs the CRDs from config/crd/bases.
// The binaries come from KUBEBUILDER_ASSETS, or from bin/k8s in the source tree.
func Start() (*Environment, error) {
	repoRoot, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(repoRoot, "bin", "k8s")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("kube-apiserver not found in %s: run the tests with 'make test', "+
			"or run hack/setup-envtest.sh once and set KUBEBUILDER_ASSETS to the directory it prints", assets)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := gitsshv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		// envtest's default of 20 s per try is too short on a loaded 2-core machine (seen:
		// five failed tries while several packages start their control planes at once).
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane from %s: %w", assets, err)
	}
	e := &Environment{env: env, Config: cfg, Scheme: scheme, AssetsDir: assets, RepoRoot: repoRoot}
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if e.KubeconfigPath, err = e.writeAdminKubeconfig(); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops the control plane and removes its data.
func (e *Environment) Stop() error {
	_ = os.RemoveAll(filepath.Dir(e.KubeconfigPath))
	return e.env.Stop()
}

// Run is the body of a TestMain: start the control plane, run the tests, stop it.
func Run(m *testing.M, env **Environment) int {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping the control plane:", err)
	}
	return code
}

// Namespace creates a namespace for one test and deletes it when the test ends.
func (e *Environment) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a test namespace: %v", err)
	}
	t.Cleanup(func() {
		// envtest runs no namespace controller, so the namespace stays Terminating; the
		// objects in it are gone with the control plane at the end of the package.
		_ = e.Client.Delete(context.Background(), ns)
	})
	return ns.Name
}

// Kubectl runs the real kubectl against the control plane and returns its combined output.
func (e *Environment) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.AssetsDir, "kubectl"), append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *Environment) writeAdminKubeconfig() (string, error) {
	user, err := e.env.AddUser(envtest.User{Name: "gitssh-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "gitssh-testenv-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, kubeconfig, 0o600)
}

// RepoRoot finds the gitssh source tree above the working directory: the first directory
// with both go.mod and config/crd/bases.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		_, modErr := os.Stat(filepath.Join(dir, "go.mod"))
		_, crdErr := os.Stat(filepath.Join(dir, "config", "crd", "bases"))
		if modErr == nil && crdErr == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it from the gitssh source tree: no go.mod with config/crd/bases above the working directory")
		}
		dir = parent
	}
}
