// Package manifests_test proves the deployment manifests: the kustomize tree in config/ and
// the Helm chart in charts/gitssh. They are rendered with the real kubectl and helm, checked
// for what gitssh needs, and applied with a server-side dry-run to a real kube-apiserver.
package manifests_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/gitssh-dev/gitssh/internal/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

const chartDir = "charts/gitssh"

// helm returns the helm binary: $HELM, or bin/helm-v3.22.0 as `make test` builds it.
func helm(t testing.TB) string {
	t.Helper()
	if path := os.Getenv("HELM"); path != "" {
		return path
	}
	path := filepath.Join(env.RepoRoot, "bin", "helm-v3.22.0")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("helm not found at %s: run the tests with 'make test' (it builds helm into bin/), "+
			"or set HELM to a helm v3 binary", path)
	}
	return path
}

// run runs a command in the repository root with stdin and returns its stdout; stderr goes
// into the error.
func run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = env.RepoRoot
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return stdout.Bytes(), nil
}

// helmTemplate renders the chart as release "gitssh" in namespace ns.
func helmTemplate(t testing.TB, ns string, args ...string) ([]byte, error) {
	t.Helper()
	return run(t.Context(), nil, helm(t), append([]string{"template", "gitssh", chartDir, "--namespace", ns}, args...)...)
}

// kubectl runs the envtest kubectl with the admin kubeconfig.
func kubectl(t testing.TB, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	return run(t.Context(), stdin, filepath.Join(env.AssetsDir, "kubectl"), append([]string{"--kubeconfig", env.KubeconfigPath}, args...)...)
}

// manifest is a parsed multi-document YAML stream.
type manifest []*unstructured.Unstructured

func parse(t testing.TB, data []byte) manifest {
	t.Helper()
	var out manifest
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading rendered YAML: %v", err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("parsing rendered YAML: %v\n%s", err, doc)
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue // a document with only comments
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			t.Fatalf("parsing rendered YAML: %v\n%s", err, doc)
		}
		out = append(out, obj)
	}
}

// one returns the only object of kind (and name, when not empty), failing otherwise.
func (m manifest) one(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, obj := range m {
		if obj.GetKind() == kind && (name == "" || obj.GetName() == name) {
			found = append(found, obj)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in the manifest, found %d", kind, name, len(found))
	}
	return found[0]
}

func (m manifest) kinds() []string {
	var kinds []string
	for _, obj := range m {
		kinds = append(kinds, obj.GetKind()+"/"+obj.GetName())
	}
	return kinds
}

func (m manifest) without(kind string) manifest {
	var out manifest
	for _, obj := range m {
		if obj.GetKind() != kind {
			out = append(out, obj)
		}
	}
	return out
}

func (m manifest) yaml(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, obj := range m {
		data, err := yaml.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	return buf.Bytes()
}

// nested reads a field of obj by path, failing when it is missing.
func nested(t testing.TB, obj *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, found, err := unstructured.NestedFieldNoCopy(obj.Object, path...)
	if err != nil || !found {
		t.Fatalf("%s %s: no field %s", obj.GetKind(), obj.GetName(), strings.Join(path, "."))
	}
	return v
}

// container is the Deployment's gitssh container.
func container(t testing.TB, deploy *unstructured.Unstructured) map[string]any {
	t.Helper()
	containers := nested(t, deploy, "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("want one container, got %d", len(containers))
	}
	return containers[0].(map[string]any)
}

// args returns the container's flags as name → value ("--leader-elect" alone → "true").
func args(t testing.TB, deploy *unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range container(t, deploy)["args"].([]any) {
		name, value, ok := strings.Cut(a.(string), "=")
		if !ok {
			value = "true"
		}
		out[strings.TrimPrefix(name, "--")] = value
	}
	return out
}

// mainFlags returns gitssh's flags (internal/app/flags.go), read from the source so that a new flag
// without a chart value fails a test.
func mainFlags(t testing.TB) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(env.RepoRoot, "internal", "app", "flags.go"))
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`fs\.\w+Var\([^,]+,\s*"([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in internal/app/flags.go: %v; has the flag wiring moved?", len(flags), flags)
	}
	return flags
}

// applyDryRun creates namespace ns (for real) and applies m to it with a server-side dry-run.
func applyDryRun(t testing.TB, ns string, m manifest) {
	t.Helper()
	g := NewWithT(t)
	if _, err := kubectl(t, nil, "get", "namespace", ns); err != nil {
		out, err := kubectl(t, nil, "create", "namespace", ns)
		g.Expect(err).NotTo(HaveOccurred(), string(out))
	}
	out, err := kubectl(t, m.yaml(t), "apply", "--server-side", "--dry-run=server", "--force-conflicts",
		"--field-manager=gitssh-manifests-test", "-n", ns, "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "server-side dry-run of %v:\n%s", m.kinds(), out)
	for _, obj := range m {
		g.Expect(string(out)).To(ContainSubstring(obj.GetName()), "kubectl did not report %s/%s", obj.GetKind(), obj.GetName())
	}
}
