package manifests_test

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestKustomizeDefault(t *testing.T) {
	g := NewWithT(t)
	out, err := kubectl(t, nil, "kustomize", "config/default")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)

	for _, obj := range m {
		if obj.GetKind() != "Namespace" && obj.GetKind() != "CustomResourceDefinition" && obj.GetKind() != "ClusterRole" {
			g.Expect(obj.GetNamespace()).To(Equal("gitssh-system"), "%s/%s", obj.GetKind(), obj.GetName())
		}
	}
	m.one(t, "Namespace", "gitssh-system")
	m.one(t, "CustomResourceDefinition", "sshpublickeys.gitssh.dev")
	m.one(t, "CustomResourceDefinition", "gitprojects.gitssh.dev")

	// The generated rules, granted in the one namespace only.
	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("ClusterRoleBinding/")))
	m.one(t, "ClusterRole", "gitssh-manager-role")
	binding := m.one(t, "RoleBinding", "gitssh-manager")
	g.Expect(nested(t, binding, "roleRef", "name")).To(Equal("gitssh-manager-role"))
	g.Expect(nested(t, binding, "subjects")).To(Equal([]any{map[string]any{
		"kind": "ServiceAccount", "name": "gitssh", "namespace": "gitssh-system"}}))
	m.one(t, "ServiceAccount", "gitssh")

	deploy := m.one(t, "Deployment", "gitssh")
	g.Expect(nested(t, deploy, "spec", "replicas")).To(BeEquivalentTo(1))
	g.Expect(nested(t, deploy, "spec", "strategy", "type")).To(Equal("Recreate"))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "serviceAccountName")).To(Equal("gitssh"))
	flags := args(t, deploy)
	g.Expect(flags).To(HaveKeyWithValue("service-name", "gitssh"))
	g.Expect(flags).To(HaveKeyWithValue("leader-elect", "true"))
	for flag := range flags {
		g.Expect(mainFlags(t)).To(ContainElement(flag), "config/manager passes --%s, which gitssh does not define", flag)
	}
	c := container(t, deploy)
	g.Expect(c["image"]).To(Equal("ghcr.io/gitssh-dev/gitssh:latest"))
	g.Expect(c["securityContext"]).To(And(
		HaveKeyWithValue("readOnlyRootFilesystem", true),
		HaveKeyWithValue("capabilities", map[string]any{"drop": []any{"ALL"}}),
	))
	g.Expect(c["volumeMounts"]).To(ContainElements(
		map[string]any{"name": "repositories", "mountPath": "/var/lib/gitssh/repositories"},
		map[string]any{"name": "tmp", "mountPath": "/tmp"},
	))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "securityContext")).To(And(
		HaveKeyWithValue("runAsNonRoot", true),
		HaveKeyWithValue("seccompProfile", map[string]any{"type": "RuntimeDefault"}),
	))

	svc := m.one(t, "Service", "gitssh")
	g.Expect(nested(t, svc, "spec", "type")).To(Equal("LoadBalancer"))
	g.Expect(nested(t, svc, "spec", "ports")).To(Equal([]any{map[string]any{
		"name": "gitssh", "port": int64(22), "targetPort": int64(2222), "protocol": "TCP"}}))
	pvc := m.one(t, "PersistentVolumeClaim", "gitssh-repositories")
	g.Expect(nested(t, pvc, "spec", "accessModes")).To(Equal([]any{"ReadWriteOnce"}))
	g.Expect(nested(t, pvc, "spec", "resources", "requests", "storage")).To(Equal("10Gi"))

	applyDryRun(t, "gitssh-system", m)
}
