package packcache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gitssh-dev/gitssh/internal/promreg"
)

// Request results: label result of gitssh_pack_cache_requests_total and
// gitssh_pack_cache_served_bytes_total.
const (
	resultHit    = "hit"    // served from a finished entry or one being written
	resultMiss   = "miss"   // ran pack-objects into a new entry
	resultBypass = "bypass" // ran pack-objects uncached: request too large or not cacheable, entry failed, disk error or full
)

type metrics struct {
	requests       *prometheus.CounterVec // result
	responses      *prometheus.CounterVec // result
	servedBytes    *prometheus.CounterVec // result
	generatedBytes prometheus.Counter
	runDuration    prometheus.Histogram
	evictions      *prometheus.CounterVec // reason
	bytes          prometheus.Gauge
	maxBytes       prometheus.Gauge
	entries        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_requests_total",
			Help: "git pack-objects requests of upload-pack, by result: hit (served from the cache), miss (ran pack-objects into the cache) or bypass (ran uncached).",
		}, []string{"result"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_responses_total",
			Help: "Protocol v2 fetch requests the cache could answer whole (a clone, or a fetch's last round, after the refs were listed), by result: hit (served from the cache, no git process), miss (ran upload-pack into the cache) or bypass (left to the session's upload-pack).",
		}, []string{"result"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_served_bytes_total",
			Help: "Bytes sent from the cache, packs to upload-pack and whole fetch responses to clients, by result: hit or miss.",
		}, []string{"result"}),
		generatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_generated_bytes_total",
			Help: "Bytes written into the cache: packs by git pack-objects, and whole fetch answers by upload-pack.",
		}),
		runDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gitssh_pack_cache_pack_objects_duration_seconds",
			Help:    "Time git pack-objects ran to fill a cache entry.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_evictions_total",
			Help: "Finished entries removed, by reason: ttl, size (over --pack-cache-max-size) or space (the cache's volume too full for a new entry).",
		}, []string{"reason"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_pack_cache_bytes",
			Help: "Bytes held by finished cache entries.",
		}),
		// A dashboard draws gitssh_pack_cache_bytes against it.
		maxBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_pack_cache_max_bytes",
			Help: "What finished cache entries may hold (--pack-cache-max-size).",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_pack_cache_entries",
			Help: "Cache entries, finished or being written.",
		}),
	}
	// Every series from the start, at 0, as the SSH server's.
	for _, r := range []string{resultHit, resultMiss, resultBypass} {
		m.requests.WithLabelValues(r)
		m.responses.WithLabelValues(r)
	}
	for _, r := range []string{resultHit, resultMiss} {
		m.servedBytes.WithLabelValues(r)
	}
	for _, r := range []string{"ttl", "size", "space"} {
		m.evictions.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	m.requests = promreg.Register(reg, m.requests)
	m.responses = promreg.Register(reg, m.responses)
	m.servedBytes = promreg.Register(reg, m.servedBytes)
	m.generatedBytes = promreg.Register(reg, m.generatedBytes)
	m.runDuration = promreg.Register(reg, m.runDuration)
	m.evictions = promreg.Register(reg, m.evictions)
	m.bytes = promreg.Register(reg, m.bytes)
	m.maxBytes = promreg.Register(reg, m.maxBytes)
	m.entries = promreg.Register(reg, m.entries)
	return m
}
