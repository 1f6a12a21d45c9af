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
	// Certificate logins have no object whose status could hold a time: they are counted,
	// by CA, and each is logged with its key ID and serial.
	certificateLogins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitssh_certificate_logins_total",
		Help: "Logins with a user certificate, by the SHA256 fingerprint of the CA that signed it.",
	}, []string{"ca"})
	pendingObjects = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitssh_usage_pending_objects",
		Help: "Objects with usage times waiting to be written.",
	})
)

func init() {
	metrics.Registry.MustRegister(eventsRecorded, patchesSent, patchFailures, pendingObjects, certificateLogins)
}
