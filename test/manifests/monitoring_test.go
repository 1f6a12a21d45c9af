package manifests_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	_ "github.com/gitssh-dev/gitssh/controllers" // registers the housekeeping metrics
	"github.com/gitssh-dev/gitssh/internal/packcache"
	_ "github.com/gitssh-dev/gitssh/internal/usage" // registers the usage metrics
	"github.com/gitssh-dev/gitssh/sshserver"
)

// externalMetrics are the metrics the alerts read from elsewhere: Prometheus's own and
// kube-state-metrics'.
var externalMetrics = []string{"up", "kube_deployment_status_replicas_ready"}

// gitsshMetrics returns the names of the series gitssh exports, as the packages register
// them: the SSH server's, the pack cache's, the usage recorder's and the controllers'
// (housekeeping), a histogram as its _bucket, _sum and _count.
func gitsshMetrics(t *testing.T, g Gomega) map[string]bool {
	reg := prometheus.NewRegistry()
	sshserver.NewMetrics(reg)
	cache, err := packcache.New(packcache.Config{Dir: t.TempDir(), Registerer: reg,
		Command: func(context.Context, string, []string) *exec.Cmd { return nil }})
	g.Expect(err).NotTo(HaveOccurred())
	cache.Close()
	names := map[string]bool{}
	for _, gatherer := range []prometheus.Gatherer{reg, ctrlmetrics.Registry} {
		families, err := gatherer.Gather()
		g.Expect(err).NotTo(HaveOccurred())
		for _, f := range families {
			if !strings.HasPrefix(f.GetName(), "gitssh_") {
				continue
			}
			names[f.GetName()] = true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					names[f.GetName()+suffix] = true
				}
			}
		}
	}
	g.Expect(names).To(HaveKey("gitssh_ssh_connections_accepted_total"))
	g.Expect(names).To(HaveKey("gitssh_usage_pending_objects"))
	g.Expect(names).To(HaveKey("gitssh_pack_cache_requests_total"))
	g.Expect(names).To(HaveKey("gitssh_housekeeping_runs_total"))
	return names
}

var (
	// A selector: metric{label="v", label=~"v"}, or a bare metric name.
	selectorRE   = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	gitsshNameRE = regexp.MustCompile(`\bgitssh_[a-zA-Z0-9_]+`)
	matcherRE    = regexp.MustCompile(`^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"[^"]*"\s*$`)
	// PromQL words that are not metric names.
	promqlWords = regexp.MustCompile(`^(sum|rate|increase|by|histogram_quantile|absent|or|and|unless|le|avg|max|min|count)$`)
)

// checkPromQL checks the shape of a PromQL expression: balanced brackets, well-formed
// label matchers, and metric names that exist (gitssh's own, or those of externalMetrics).
func checkPromQL(g Gomega, expr string, known map[string]bool) {
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	for _, r := range expr {
		switch r {
		case '(', '{', '[':
			depth[r]++
		case ')', '}', ']':
			depth[pairs[r]]--
			g.Expect(depth[pairs[r]]).To(BeNumerically(">=", 0), "unbalanced %q in %s", r, expr)
		}
	}
	g.Expect(depth).To(HaveEach(0), "unbalanced brackets in %s", expr)

	for _, name := range gitsshNameRE.FindAllString(expr, -1) {
		g.Expect(known).To(HaveKey(name), "%s names a metric gitssh does not export", expr)
	}
	selectors := selectorRE.FindAllStringSubmatch(expr, -1)
	g.Expect(selectors).NotTo(BeEmpty(), "no metric selector in %s", expr)
	for _, s := range selectors {
		name, matchers := s[1], s[2]
		if promqlWords.MatchString(name) {
			continue // "by (le, service)" has no braces; this is a safety net
		}
		if !strings.HasPrefix(name, "gitssh_") {
			g.Expect(externalMetrics).To(ContainElement(name), "%s names an unexpected metric", expr)
		}
		for _, m := range strings.Split(matchers, ",") {
			g.Expect(m).To(MatchRegexp(matcherRE.String()), "label matcher in %s", expr)
		}
	}
}

// The Grafana dashboard and the PrometheusRule are off by default; on, the dashboard is
// valid JSON in a ConfigMap the Grafana sidecar finds, every query and alert names only
// metrics gitssh exports, and both apply to a real API server.
func TestChartMonitoring(t *testing.T) {
	g := NewWithT(t)
	out, err := helmTemplate(t, "gitssh-system")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(parse(t, out).kinds()).NotTo(ContainElements(ContainSubstring("PrometheusRule/"), "ConfigMap/gitssh-dashboard"))

	ns := env.Namespace(t)
	out, err = run(t.Context(), nil, helm(t), "template", "gitssh", chartDir, "--namespace", ns,
		"--set", "metrics.grafanaDashboard.enabled=true", "--set", "metrics.grafanaDashboard.annotations.grafana_folder=Git",
		"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.labels.release=prometheus",
		"--set-json", "metrics.prometheusRule.refusedLoginsPerSecond=2.5")
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	m := parse(t, out)
	known := gitsshMetrics(t, g)

	cm := m.one(t, "ConfigMap", "gitssh-dashboard")
	g.Expect(cm.GetLabels()).To(HaveKeyWithValue("grafana_dashboard", "1"))
	g.Expect(cm.GetAnnotations()).To(HaveKeyWithValue("grafana_folder", "Git"))
	var dashboard struct {
		Title  string
		UID    string
		Panels []struct {
			Title, Type string
			Targets     []struct{ Expr string }
		}
	}
	data := nested(t, cm, "data", "gitssh.json").(string)
	g.Expect(json.Unmarshal([]byte(data), &dashboard)).To(Succeed())
	g.Expect(dashboard.UID).NotTo(BeEmpty())
	g.Expect(len(dashboard.Panels)).To(BeNumerically(">=", 6))
	used := map[string]bool{}
	for _, p := range dashboard.Panels {
		if p.Type == "row" {
			continue
		}
		g.Expect(p.Targets).NotTo(BeEmpty(), "panel %q", p.Title)
		for _, target := range p.Targets {
			checkPromQL(g, target.Expr, known)
			for _, s := range selectorRE.FindAllStringSubmatch(target.Expr, -1) {
				used[strings.TrimSuffix(s[1], "_bucket")] = true
			}
		}
	}
	for name := range known {
		shown := strings.HasPrefix(name, "gitssh_ssh_") || strings.HasPrefix(name, "gitssh_pack_cache_") || strings.HasPrefix(name, "gitssh_housekeeping_")
		if shown && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") && !strings.HasSuffix(name, "_bucket") {
			g.Expect(used).To(HaveKey(name), "the dashboard shows every metric of the SSH server, the pack cache and housekeeping")
		}
	}

	rule := m.one(t, "PrometheusRule", "gitssh")
	g.Expect(rule.GetLabels()).To(HaveKeyWithValue("release", "prometheus"))
	var spec struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	b, err := json.Marshal(rule.Object["spec"])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(json.Unmarshal(b, &spec)).To(Succeed())
	g.Expect(spec.Groups).To(HaveLen(1))
	alerts := map[string]string{}
	for _, r := range spec.Groups[0].Rules {
		alerts[r.Alert] = r.Expr
		checkPromQL(g, r.Expr, known)
		g.Expect(r.Expr).To(ContainSubstring(`namespace="`+ns+`"`), "alerts are scoped to the release")
		g.Expect(r.For).To(MatchRegexp(`^\d+m$`))
		g.Expect(r.Labels).To(HaveKey("severity"))
		g.Expect(r.Annotations).To(HaveKey("summary"))
		g.Expect(r.Annotations).To(HaveKey("description"))
	}
	g.Expect(alerts).To(HaveKey("GitsshNoReadyReplica"))
	g.Expect(alerts["GitsshNoReadyReplica"]).To(ContainSubstring(`deployment="gitssh"`))
	g.Expect(alerts["GitsshNoReadyReplica"]).To(ContainSubstring(`job="gitssh-metrics"`), "the ServiceMonitor's job: the metrics Service")
	g.Expect(alerts).To(HaveKeyWithValue("GitsshRefusedLoginSpike", ContainSubstring(`outcome="refused"}[10m])) > 2.5`)))
	g.Expect(alerts).To(HaveKeyWithValue("GitsshGitCommandErrors", ContainSubstring(`result="error"`)))
	g.Expect(alerts).To(HaveKeyWithValue("GitsshUploadQueueTimeouts", ContainSubstring("gitssh_ssh_upload_pack_queue_timeouts_total")))
	g.Expect(alerts).To(HaveKeyWithValue("GitsshHousekeepingFailing", ContainSubstring("gitssh_housekeeping_failing_repositories")))
	g.Expect(alerts).To(HaveKeyWithValue("GitsshPackCacheEvictingForSize", ContainSubstring(`reason="size"`)))

	// envtest runs no Prometheus Operator: install a stand-in PrometheusRule CRD.
	crd, err := kubectl(t, nil, "apply", "--server-side", "-f", "test/manifests/testdata/prometheusrule-crd.yaml")
	g.Expect(err).NotTo(HaveOccurred(), string(crd))
	_, err = kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=30s", "crd/prometheusrules.monitoring.coreos.com")
	g.Expect(err).NotTo(HaveOccurred())
	applyDryRun(t, ns, m.without("CustomResourceDefinition"))
}
