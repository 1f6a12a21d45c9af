package manifests_test

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// namedRules are the rules written by hand next to the generated ones, in
// config/rbac/named_rules.yaml and the chart's templates/rbac.yaml: what gitssh does with
// the one Secret, ConfigMap and Service it touches, named as the Deployment's flags name
// them. Everything else it reads or writes is in the generated rules.
func namedRules(hostKeySecret, serviceName, leaseName, trustedUserCAs string) []any {
	rules := []any{
		// LoadOrCreateHostKeys gets it; the cache lists and watches it by name.
		map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"},
			"resourceNames": []any{hostKeySecret}, "verbs": []any{"get", "list", "watch"}},
		// First start: a POST, which resourceNames cannot narrow.
		map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"}, "verbs": []any{"create"}},
		// The known-hosts reconciler: the cache, and server-side apply (patch, or create).
		map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"},
			"resourceNames": []any{hostKeySecret + "-known-hosts"}, "verbs": []any{"get", "list", "watch", "create", "patch"}},
		// PublicEndpoint reads the Service's LoadBalancer address.
		map[string]any{"apiGroups": []any{""}, "resources": []any{"services"},
			"resourceNames": []any{serviceName}, "verbs": []any{"get"}},
		// Leader election: client-go's lease lock gets and updates its Lease, and creates it once.
		map[string]any{"apiGroups": []any{"coordination.k8s.io"}, "resources": []any{"leases"},
			"resourceNames": []any{leaseName}, "verbs": []any{"get", "update"}},
		map[string]any{"apiGroups": []any{"coordination.k8s.io"}, "resources": []any{"leases"}, "verbs": []any{"create"}},
	}
	if trustedUserCAs != "" {
		// The trusted user CA reconciler's cache lists and watches it by name; never written.
		rules = append(rules, map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"},
			"resourceNames": []any{trustedUserCAs}, "verbs": []any{"get", "list", "watch"}})
	}
	return rules
}

// TestRoleNamesItsObjects keeps the hand-written rules of the kustomize tree and of the
// chart in sync: in each rendering, the Role bound to gitssh's ServiceAccount holds the
// generated rules followed by namedRules for the names that rendering's Deployment passes
// to gitssh. So the two are equal up to those names, and a renamed Secret or Service
// renames its rule.
func TestRoleNamesItsObjects(t *testing.T) {
	generated := generatedRules(t)
	for _, rule := range generated {
		for _, resource := range rule.(map[string]any)["resources"].([]any) {
			NewWithT(t).Expect(resource).NotTo(BeElementOf("secrets", "configmaps", "services", "leases"),
				"a +kubebuilder:rbac marker grants %s to every object of the namespace: remove it, "+
					"the rules that name gitssh's own are written by hand (config/rbac/named_rules.yaml, "+
					"charts/gitssh/templates/rbac.yaml)", resource)
		}
	}

	for _, tt := range []struct {
		name   string
		render []string // kubectl or helm, from the repository root
	}{
		{"kustomize", []string{"kubectl", "kustomize", "config/default"}},
		{"chart defaults", []string{"helm", "template", "gitssh", chartDir}},
		{"chart custom values", []string{"helm", "template", "acme", chartDir, "--values", "test/manifests/testdata/values-custom.yaml"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			var out []byte
			var err error
			if tt.render[0] == "kubectl" {
				out, err = kubectl(t, nil, tt.render[1:]...)
			} else {
				out, err = run(t.Context(), nil, helm(t), tt.render[1:]...)
			}
			g.Expect(err).NotTo(HaveOccurred())
			m := parse(t, out)

			deploy := m.one(t, "Deployment", "")
			account := nested(t, deploy, "spec", "template", "spec", "serviceAccountName")
			// The RoleBinding of gitssh's ServiceAccount (selfService adds one for people).
			var binding *unstructured.Unstructured
			for _, rb := range m {
				if rb.GetKind() == "RoleBinding" && rb.GetName() != "gitssh-sshpublickey-self-service" && rb.GetName() != "acme-gitssh-sshpublickey-self-service" {
					g.Expect(binding).To(BeNil(), "two RoleBindings for gitssh")
					binding = rb
				}
			}
			g.Expect(binding).NotTo(BeNil())
			g.Expect(nested(t, binding, "subjects")).To(ContainElement(HaveKeyWithValue("name", account)))
			ref := nested(t, binding, "roleRef").(map[string]any)
			role := m.one(t, ref["kind"].(string), ref["name"].(string))

			flags := args(t, deploy)
			want := append(append([]any{}, generated...), namedRules(flags["host-key-secret"], flags["service-name"], leaseName(flags), flags["trusted-user-ca-keys"])...)
			g.Expect(nested(t, role, "rules")).To(Equal(want),
				"the Role must be the generated rules (run 'make manifests') and then the named ones")
		})
	}
}

// generatedRules are the rules controller-gen wrote from the +kubebuilder:rbac markers.
func generatedRules(t testing.TB) []any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.RepoRoot, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role struct{ Rules []any }
	if err := yaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

// leaseName is the leader election Lease a Deployment's flags name: gitssh's default when
// the flag is absent.
func leaseName(flags map[string]string) string {
	if id, ok := flags["leader-election-id"]; ok {
		return id
	}
	return "gitssh-leader"
}
