package usage

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	eventsRecorded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitssh_usage_events_recorded_total",
		Help: "Logins, refused keys, pushes and fetches recorded, by status field.",
	}, []string{"field"})
	patchesSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gitssh_usage_status_patches_total",
		Help: "Status patches written for usage times.",
	})
	patchFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gitssh_usage_status_patch_failures_total",
		Help: "Usage status writes that failed and were kept for a retry.",
	})
	pendingObjects = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitssh_usage_pending_objects",
		Help: "Objects with usage times waiting to be written.",
	})
)

func init() {
	metrics.Registry.MustRegister(eventsRecorded, patchesSent, patchFailures, pendingObjects)
}
