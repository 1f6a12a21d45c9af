package manifests_test

import (
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// The kustomize tree passes gitssh the container's limits as the chart does (the Downward
// API, into --cpu-limit and --memory-limit), with the same resources: git's pack.threads and
// pack.windowMemory, and Go's memory limit, follow the pod's limits either way. It turns the
// pack cache on as the chart does by default, with the same volumes and mounts.
func TestKustomizeMatchesTheChart(t *testing.T) {
	g := NewWithT(t)
	out, err := kubectl(t, nil, "kustomize", "config/default")
	g.Expect(err).NotTo(HaveOccurred())
	kustomized := parse(t, out).one(t, "Deployment", "gitssh")
	out, err = helmTemplate(t, "gitssh-system")
	g.Expect(err).NotTo(HaveOccurred())
	charted := parse(t, out).one(t, "Deployment", "gitssh")

	type settings struct {
		flags                      map[string]string
		env                        map[string]any
		resources, volumes, mounts any
	}
	settingsOf := func(deploy *unstructured.Unstructured) settings {
		s := settings{flags: map[string]string{}, env: map[string]any{}}
		for _, name := range []string{"cpu-limit", "memory-limit", "pack-cache-dir"} {
			s.flags[name] = args(t, deploy)[name]
		}
		c := container(t, deploy)
		for _, e := range c["env"].([]any) {
			if from, ok := e.(map[string]any)["valueFrom"].(map[string]any); ok && from["resourceFieldRef"] != nil {
				s.env[e.(map[string]any)["name"].(string)] = from
			}
		}
		s.resources, s.mounts = c["resources"], c["volumeMounts"]
		s.volumes = nested(t, deploy, "spec", "template", "spec", "volumes")
		return s
	}
	k, c := settingsOf(kustomized), settingsOf(charted)
	g.Expect(k.flags).To(Equal(map[string]string{
		"cpu-limit": "$(GITSSH_CPU_LIMIT_MILLICORES)m", "memory-limit": "$(GITSSH_MEMORY_LIMIT)",
		"pack-cache-dir": "/var/cache/gitssh/packs"}))
	g.Expect(k.flags).To(Equal(c.flags))
	g.Expect(k.env).To(HaveKeyWithValue("GITSSH_CPU_LIMIT_MILLICORES", map[string]any{"resourceFieldRef": map[string]any{
		"containerName": "gitssh", "resource": "limits.cpu", "divisor": "1m"}}))
	g.Expect(k.env).To(HaveKeyWithValue("GITSSH_MEMORY_LIMIT", map[string]any{"resourceFieldRef": map[string]any{
		"containerName": "gitssh", "resource": "limits.memory"}}))
	g.Expect(k.env).NotTo(HaveKey("GOMEMLIMIT"), "gitssh sets Go's memory limit from --memory-limit")
	g.Expect(k.env).To(Equal(c.env))
	g.Expect(k.resources).To(HaveKeyWithValue("limits", HaveKey("memory")), "a memory limit bounds pack.windowMemory")
	g.Expect(k.resources).To(Equal(c.resources))
	g.Expect(k.volumes).To(ContainElement(map[string]any{"name": "pack-cache", "emptyDir": map[string]any{}}))
	g.Expect(k.volumes).To(Equal(c.volumes))
	g.Expect(k.mounts).To(Equal(c.mounts))
}
