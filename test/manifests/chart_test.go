package manifests_test

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestHelmLint(t *testing.T) {
	for _, values := range []string{"", "test/manifests/testdata/values-custom.yaml"} {
		t.Run("values="+values, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			if values != "" {
				args = append(args, "--values", values)
			}
			out, err := run(t.Context(), nil, helm(t), args...)
			NewWithT(t).Expect(err).NotTo(HaveOccurred(), string(out))
		})
	}
}

func TestChartDefaults(t *testing.T) {
	g := NewWithT(t)
	out, err := helmTemplate(t, "gitssh-system")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)

	deploy := m.one(t, "Deployment", "gitssh")
	g.Expect(nested(t, deploy, "spec", "replicas")).To(BeEquivalentTo(1))
	g.Expect(nested(t, deploy, "spec", "strategy", "type")).To(Equal("Recreate"), "one ReadWriteOnce volume")
	g.Expect(nested(t, deploy, "spec", "template", "spec", "terminationGracePeriodSeconds")).To(BeEquivalentTo(45))

	flags := args(t, deploy)
	for _, flag := range mainFlags(t) {
		if flag == "namespace" || flag == "ssh-public-host" || flag == "ssh-public-port" || flag == "ssh-git-hooks-dir" || flag == "trusted-user-ca-keys" || flag == "pprof-bind-address" {
			// The pod's namespace; the public address defaults to the Service's; no hooks; no
			// CAs; Go's profiles are unauthenticated, so off unless extraArgs turns them on.
			continue
		}
		g.Expect(flags).To(HaveKey(flag), "gitssh's --%s is not set by the chart: add a value for it", flag)
	}
	for flag := range flags {
		g.Expect(mainFlags(t)).To(ContainElement(flag), "the chart passes --%s, which gitssh does not define", flag)
	}
	g.Expect(flags).To(Equal(map[string]string{
		"leader-elect":                     "true",
		"leader-election-id":               "gitssh-leader",
		"ssh-addr":                         ":2222",
		"service-name":                     "gitssh",
		"repo-root":                        "/var/lib/gitssh/repositories",
		"host-key-secret":                  "gitssh-host-keys",
		"metrics-bind-address":             ":8080",
		"health-probe-bind-address":        ":8081",
		"ssh-user":                         "git",
		"ssh-login-grace-time":             "30s",
		"ssh-max-auth-tries":               "6",
		"ssh-max-startups":                 "128:30:512",
		"ssh-max-startups-per-source":      "64",
		"ssh-max-conns":                    "1024",
		"ssh-proxy-protocol":               "off",
		"ssh-proxy-protocol-trusted-cidrs": "",
		"ssh-per-source-penalties":         "off", // kube-proxy's SNAT hides client addresses
		"ssh-penalty-exempt-cidrs":         "",
		"ssh-penalty-max-sources":          "65536",
		"ssh-max-sessions-per-conn":        "10",
		"ssh-idle-timeout":                 "2m",
		"ssh-keepalive-interval":           "15s",
		"ssh-keepalive-count-max":          "3",
		"ssh-max-session-duration":         "0s",
		"ssh-shutdown-grace-period":        "30s",
		"ssh-max-push-size":                "1Gi",
		"pack-cache-dir":                   "/var/cache/gitssh/packs",
		"pack-cache-max-size":              "1Gi",
		"pack-cache-ttl":                   "5m",
		"ssh-ciphers":                      "aes128-gcm@openssh.com,aes256-gcm@openssh.com",
		"usage-flush-interval":             "1m",
		"max-key-lifetime":                 "0s",
		"key-expiry-warning":               "168h",
		"stale-key-after":                  "0s",
		"ssh-max-upload-packs":             "0",
		"ssh-max-upload-packs-per-repo":    "0",
		"ssh-upload-queue-timeout":         "2m",
		"git-pack-threads":                 "0",
		"git-pack-window-memory":           "0",
		"timer-slack":                      "4ms",
		"cpu-limit":                        "$(GITSSH_CPU_LIMIT_MILLICORES)m",
		"memory-limit":                     "$(GITSSH_MEMORY_LIMIT)",
		"housekeeping-disabled":            "false",
		"housekeeping-interval":            "24h",
		"housekeeping-push-delay":          "5m",
		"housekeeping-timeout":             "1h",
		"housekeeping-prune-grace":         "336h",
		"housekeeping-concurrency":         "1",
	}))

	c := container(t, deploy)
	g.Expect(c["env"]).To(ContainElement(HaveKeyWithValue("valueFrom",
		map[string]any{"resourceFieldRef": map[string]any{"containerName": "gitssh", "resource": "limits.cpu", "divisor": "1m"}})))
	g.Expect(c["env"]).To(ContainElement(HaveKeyWithValue("valueFrom",
		map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}})))
	g.Expect(c["env"]).NotTo(ContainElement(HaveKeyWithValue("name", "GOMEMLIMIT")),
		"gitssh sets Go's memory limit from --memory-limit, leaving git its share; GOMEMLIMIT would override it")
	g.Expect(c["readinessProbe"]).To(HaveKeyWithValue("httpGet", HaveKeyWithValue("path", "/readyz")))
	g.Expect(c["livenessProbe"]).To(HaveKeyWithValue("httpGet", HaveKeyWithValue("path", "/healthz")))
	g.Expect(c["securityContext"]).To(And(
		HaveKeyWithValue("readOnlyRootFilesystem", true),
		HaveKeyWithValue("allowPrivilegeEscalation", false),
		HaveKeyWithValue("capabilities", map[string]any{"drop": []any{"ALL"}}),
	))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "securityContext")).To(And(
		HaveKeyWithValue("runAsNonRoot", true),
		HaveKeyWithValue("seccompProfile", map[string]any{"type": "RuntimeDefault"}),
	))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "volumes")).To(ContainElement(
		HaveKeyWithValue("persistentVolumeClaim", map[string]any{"claimName": "gitssh-repositories"})))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "volumes")).To(ContainElement(
		map[string]any{"name": "pack-cache", "emptyDir": map[string]any{}}))
	g.Expect(c["volumeMounts"]).To(ContainElement(map[string]any{"name": "pack-cache", "mountPath": "/var/cache/gitssh/packs"}))

	svc := m.one(t, "Service", "gitssh")
	g.Expect(nested(t, svc, "spec", "type")).To(Equal("LoadBalancer"))
	g.Expect(nested(t, svc, "spec", "ports")).To(Equal([]any{map[string]any{
		"name": "gitssh", "port": int64(22), "targetPort": int64(2222), "protocol": "TCP"}}))
	m.one(t, "Service", "gitssh-metrics")

	pvc := m.one(t, "PersistentVolumeClaim", "gitssh-repositories")
	g.Expect(nested(t, pvc, "spec", "accessModes")).To(Equal([]any{"ReadWriteOnce"}))
	g.Expect(nested(t, pvc, "spec", "resources", "requests", "storage")).To(Equal("10Gi"))

	for _, name := range []string{"sshpublickeys.gitssh.dev", "gitprojects.gitssh.dev"} {
		crd := m.one(t, "CustomResourceDefinition", name)
		g.Expect(crd.GetAnnotations()).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
	}

	// Least privilege: a namespaced Role (its rules: TestRoleNamesItsObjects), bound to the
	// chart's ServiceAccount, and nothing cluster-wide.
	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("ClusterRole")))
	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("ValidatingAdmissionPolicy")), "selfService is off by default")
	m.one(t, "Role", "gitssh")
	binding := m.one(t, "RoleBinding", "gitssh")
	g.Expect(nested(t, binding, "subjects")).To(Equal([]any{map[string]any{
		"kind": "ServiceAccount", "name": "gitssh", "namespace": "gitssh-system"}}))
	m.one(t, "ServiceAccount", "gitssh")
	g.Expect(nested(t, deploy, "spec", "template", "spec", "serviceAccountName")).To(Equal("gitssh"))

	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("ServiceMonitor/")))
	test := m.one(t, "Pod", "gitssh-test-host-key")
	g.Expect(test.GetAnnotations()).To(HaveKeyWithValue("helm.sh/hook", "test"))
	// Found by make e2e: with the server's labels the `helm test` Pod was an endpoint of
	// the SSH Service, and some of its own ssh-keyscan connections reached itself.
	for _, svc := range []string{"gitssh", "gitssh-metrics"} {
		selector := nested(t, m.one(t, "Service", svc), "spec", "selector").(map[string]any)
		matches := true
		for k, v := range selector {
			matches = matches && test.GetLabels()[k] == v
		}
		g.Expect(matches).To(BeFalse(), "the helm test Pod's labels %v match Service %s's selector %v", test.GetLabels(), svc, selector)
	}
	g.Expect(nested(t, test, "spec", "volumes")).To(ContainElement(HaveKeyWithValue("configMap",
		HaveKeyWithValue("name", "gitssh-host-keys-known-hosts"))))

	applyDryRun(t, "gitssh-system", m)
}

func TestChartCustomValues(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	out, err := run(t.Context(), nil, helm(t), "template", "acme", chartDir, "--namespace", ns,
		"--values", "test/manifests/testdata/values-custom.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)

	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("CustomResourceDefinition/")), "crds.enabled=false")
	g.Expect(m.kinds()).NotTo(ContainElement(HavePrefix("PersistentVolumeClaim/")), "existingClaim")

	deploy := m.one(t, "Deployment", "acme-gitssh")
	g.Expect(nested(t, deploy, "spec", "replicas")).To(BeEquivalentTo(2))
	g.Expect(nested(t, deploy, "spec", "strategy", "type")).To(Equal("RollingUpdate"), "ReadWriteMany volume")
	g.Expect(nested(t, deploy, "spec", "template", "spec", "terminationGracePeriodSeconds")).To(BeEquivalentTo(150))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "volumes")).To(ContainElement(
		HaveKeyWithValue("persistentVolumeClaim", map[string]any{"claimName": "shared-repositories"})))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "volumes")).To(ContainElement(
		HaveKeyWithValue("configMap", map[string]any{"name": "acme-git-hooks", "defaultMode": int64(0o555)})))
	g.Expect(container(t, deploy)["volumeMounts"]).To(ContainElement(
		map[string]any{"name": "git-hooks", "mountPath": "/etc/gitssh/hooks", "readOnly": true}))
	g.Expect(args(t, deploy)).To(And(
		HaveKeyWithValue("service-name", "acme-gitssh"),
		HaveKeyWithValue("leader-election-id", "acme-gitssh-leader"),
		HaveKeyWithValue("host-key-secret", "acme-git-host-keys"),
		HaveKeyWithValue("ssh-user", "forge"),
		HaveKeyWithValue("ssh-public-host", "git.example.com"),
		HaveKeyWithValue("ssh-public-port", "2022"),
		HaveKeyWithValue("ssh-login-grace-time", "10s"),
		HaveKeyWithValue("ssh-max-auth-tries", "3"),
		HaveKeyWithValue("ssh-max-startups", "16:50:64"),
		HaveKeyWithValue("ssh-max-startups-per-source", "8"),
		HaveKeyWithValue("ssh-max-conns", "256"),
		HaveKeyWithValue("ssh-proxy-protocol", "required"),
		HaveKeyWithValue("ssh-proxy-protocol-trusted-cidrs", "10.0.0.0/8,2001:db8::/32"),
		HaveKeyWithValue("ssh-per-source-penalties", "authfail:10s,max:1h"),
		HaveKeyWithValue("ssh-penalty-exempt-cidrs", "203.0.113.0/24"),
		HaveKeyWithValue("ssh-penalty-max-sources", "1000"),
		HaveKeyWithValue("ssh-max-sessions-per-conn", "4"),
		HaveKeyWithValue("ssh-idle-timeout", "1m"),
		HaveKeyWithValue("ssh-keepalive-interval", "10s"),
		HaveKeyWithValue("ssh-keepalive-count-max", "5"),
		HaveKeyWithValue("ssh-max-session-duration", "1h"),
		HaveKeyWithValue("ssh-shutdown-grace-period", "2m"),
		HaveKeyWithValue("ssh-max-push-size", "500Mi"),
		HaveKeyWithValue("ssh-git-hooks-dir", "/etc/gitssh/hooks"),
		HaveKeyWithValue("usage-flush-interval", "30s"),
		HaveKeyWithValue("max-key-lifetime", "2160h"),
		HaveKeyWithValue("key-expiry-warning", "336h"),
		HaveKeyWithValue("stale-key-after", "720h"),
		HaveKeyWithValue("trusted-user-ca-keys", "acme-user-cas"),
		HaveKeyWithValue("ssh-max-upload-packs", "8"),
		HaveKeyWithValue("git-pack-window-memory", "32Mi"),
		HaveKeyWithValue("timer-slack", "0"),
		HaveKeyWithValue("housekeeping-disabled", "true"),
		HaveKeyWithValue("housekeeping-concurrency", "2"),
		HaveKeyWithValue("zap-log-level", "debug"),
		HaveKeyWithValue("pack-cache-max-size", "256Mi"),
		HaveKeyWithValue("pack-cache-ttl", "1m"),
	))
	g.Expect(nested(t, deploy, "spec", "template", "spec", "volumes")).To(ContainElement(
		map[string]any{"name": "pack-cache", "emptyDir": map[string]any{"sizeLimit": "1Gi"}}))

	// Self-service: the policy, its binding to the release namespace, and "may manage own
	// keys" bound to developers (the policy's behaviour: TestSelfServiceKeys).
	selfService := "acme-gitssh-" + ns + "-sshpublickey-self-service"
	policy := m.one(t, "ValidatingAdmissionPolicy", selfService)
	g.Expect(nested(t, policy, "spec", "matchConditions")).To(ContainElement(HaveKeyWithValue("expression",
		ContainSubstring(`["platform-admins","system:serviceaccounts:flux-system"]`))))
	g.Expect(nested(t, m.one(t, "ValidatingAdmissionPolicyBinding", selfService), "spec", "matchResources", "namespaceSelector")).
		To(Equal(map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}}))
	g.Expect(nested(t, m.one(t, "ClusterRole", selfService), "rules")).To(ContainElement(HaveKeyWithValue("resources", []any{"sshpublickeys"})))
	g.Expect(nested(t, m.one(t, "RoleBinding", "acme-gitssh-sshpublickey-self-service"), "subjects")).To(Equal([]any{
		map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"}}))

	svc := m.one(t, "Service", "acme-gitssh")
	g.Expect(nested(t, svc, "spec", "type")).To(Equal("ClusterIP"))
	g.Expect(svc.GetAnnotations()).To(HaveKeyWithValue("example.com/owner", "platform"))
	g.Expect(nested(t, svc, "spec", "ports")).To(ContainElement(HaveKeyWithValue("port", int64(2022))))
	_, hasPolicy := svc.Object["spec"].(map[string]any)["externalTrafficPolicy"]
	g.Expect(hasPolicy).To(BeFalse(), "externalTrafficPolicy is invalid on a ClusterIP Service")

	monitor := m.one(t, "ServiceMonitor", "acme-gitssh")
	g.Expect(monitor.GetLabels()).To(HaveKeyWithValue("release", "prometheus"))
	g.Expect(nested(t, monitor, "spec", "endpoints")).To(ContainElement(HaveKeyWithValue("port", "metrics")))

	test := m.one(t, "Pod", "acme-gitssh-test-host-key")
	g.Expect(nested(t, test, "spec", "volumes")).To(ContainElement(HaveKeyWithValue("configMap",
		HaveKeyWithValue("name", "acme-git-host-keys-known-hosts"))))

	// envtest runs no Prometheus Operator: install a stand-in ServiceMonitor CRD.
	crd, err := kubectl(t, nil, "apply", "--server-side", "-f", "test/manifests/testdata/servicemonitor-crd.yaml")
	g.Expect(err).NotTo(HaveOccurred(), string(crd))
	_, err = kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com")
	g.Expect(err).NotTo(HaveOccurred())
	applyDryRun(t, ns, m)
}

func TestChartServiceOptions(t *testing.T) {
	g := NewWithT(t)
	out, err := helmTemplate(t, "gitssh-system",
		"--set", "service.externalTrafficPolicy=Local",
		"--set", "service.loadBalancerSourceRanges={203.0.113.0/24,198.51.100.0/24}",
		"--set", "persistence.storageClass=fast", "--set", "persistence.size=50Gi",
		"--set", "metrics.enabled=false", "--set", "leaderElection.enabled=false", "--set", "packCache.enabled=false")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)
	svc := m.one(t, "Service", "gitssh")
	g.Expect(nested(t, svc, "spec", "externalTrafficPolicy")).To(Equal("Local"))
	g.Expect(nested(t, svc, "spec", "loadBalancerSourceRanges")).To(Equal([]any{"203.0.113.0/24", "198.51.100.0/24"}))
	pvc := m.one(t, "PersistentVolumeClaim", "gitssh-repositories")
	g.Expect(nested(t, pvc, "spec", "storageClassName")).To(Equal("fast"))
	g.Expect(nested(t, pvc, "spec", "resources", "requests", "storage")).To(Equal("50Gi"))
	g.Expect(m.kinds()).NotTo(ContainElement("Service/gitssh-metrics"))
	g.Expect(args(t, m.one(t, "Deployment", "gitssh"))).To(And(
		HaveKeyWithValue("metrics-bind-address", "0"),
		HaveKeyWithValue("leader-elect", "false"),
		Not(HaveKey("pack-cache-dir")),
	))
	g.Expect(nested(t, m.one(t, "Deployment", "gitssh"), "spec", "template", "spec", "volumes")).NotTo(ContainElement(
		HaveKeyWithValue("name", "pack-cache")))
	applyDryRun(t, "gitssh-system", m.without("CustomResourceDefinition"))
}

func TestChartRejectsBadValues(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  []string
		want string
	}{
		{"several replicas on a ReadWriteOnce volume", []string{"replicaCount=2"}, "needs a ReadWriteMany volume"},
		{"several replicas without a volume", []string{"replicaCount=2", "persistence.enabled=false"}, "needs a shared volume"},
		{"pods killed before running pushes finish", []string{"ssh.shutdownGracePeriod=1m"}, "must exceed ssh.shutdownGracePeriod"},
		{"unknown Service type", []string{"service.type=External"}, "/service/type"},
		{"a duration that is not one", []string{"ssh.idleTimeout=two minutes"}, "/ssh/idleTimeout"},
		{"MaxStartups that is not start:rate:full", []string{"ssh.maxStartups=10:30"}, "/ssh/maxStartups"},
		{"a size that is not one", []string{"ssh.maxPushSize=1GB"}, "/ssh/maxPushSize"},
		{"PROXY protocol without trusted CIDRs", []string{"ssh.proxyProtocol=optional"}, "/ssh/proxyProtocolTrustedCIDRs"},
		{"an unknown PROXY protocol mode", []string{"ssh.proxyProtocol=on"}, "/ssh/proxyProtocol"},
		{"a trusted CIDR that is not one", []string{"ssh.proxyProtocol=required", "ssh.proxyProtocolTrustedCIDRs={lb.example.com}"}, "/ssh/proxyProtocolTrustedCIDRs/0"},
		{"penalties that are not OpenSSH's syntax", []string{"ssh.perSourcePenalties=authfail=5s"}, "/ssh/perSourcePenalties"},
		{"a relative hooks directory", []string{"ssh.gitHooksDir=hooks"}, "/ssh/gitHooksDir"},
		{"a CA ConfigMap name that is not one", []string{"ssh.trustedUserCAKeys=User CAs"}, "/ssh/trustedUserCAKeys"},
		{"a self-service value mistyped", []string{"selfService.adminGroup=admins"}, "adminGroup"},
		{"a cipher gitssh does not support", []string{"ssh.ciphers={aes128-cbc}"}, "/ssh/ciphers/0"},
		{"a mistyped value", []string{"ssh.maxConn=10"}, "maxConn"},
		{"no access mode", []string{"persistence.accessModes=null"}, "accessModes"}, {"a missing SSH limit", []string{"ssh.maxConns=null"}, "maxConns"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			var args []string
			for _, s := range tt.set {
				args = append(args, "--set", s)
			}
			out, err := helmTemplate(t, "gitssh-system", args...)
			g.Expect(err).To(HaveOccurred(), string(out))
			g.Expect(err.Error()).To(ContainSubstring(tt.want))
		})
	}
}

// TestChartPenaltiesNeedRealAddresses: per-source penalties are on by default only where
// gitssh sees each client's own address; an explicit value always wins.
func TestChartPenaltiesNeedRealAddresses(t *testing.T) {
	const openSSHDefaults = "authfail:5s,noauth:1s,min:15s,max:10m"
	for _, tt := range []struct {
		name string
		set  []string
		want string
	}{
		{"behind kube-proxy's SNAT", nil, "off"},
		{"externalTrafficPolicy Local", []string{"service.externalTrafficPolicy=Local"}, openSSHDefaults},
		{"PROXY protocol", []string{"ssh.proxyProtocol=required", "ssh.proxyProtocolTrustedCIDRs={10.0.0.0/8}"}, openSSHDefaults},
		{"set explicitly behind SNAT", []string{"ssh.perSourcePenalties=authfail:2s"}, "authfail:2s"},
		{"turned off with real addresses", []string{"service.externalTrafficPolicy=Local", "ssh.perSourcePenalties=off"}, "off"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			var flags []string
			for _, s := range tt.set {
				flags = append(flags, "--set", s)
			}
			out, err := helmTemplate(t, "gitssh-system", flags...)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(args(t, parse(t, out).one(t, "Deployment", "gitssh"))).To(HaveKeyWithValue("ssh-per-source-penalties", tt.want))
		})
	}
}
