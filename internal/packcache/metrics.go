package packcache

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Request results: label result of gitssh_pack_cache_requests_total and
// gitssh_pack_cache_served_bytes_total.
const (
	resultHit    = "hit"    // served from a finished entry or one being written
	resultMiss   = "miss"   // ran pack-objects into a new entry
	resultBypass = "bypass" // ran pack-objects uncached: request too large, entry failed, disk error
)

type metrics struct {
	requests       *prometheus.CounterVec // result
	servedBytes    *prometheus.CounterVec // result
	generatedBytes prometheus.Counter
	runDuration    prometheus.Histogram
	evictions      *prometheus.CounterVec // reason
	bytes          prometheus.Gauge
	entries        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_requests_total",
			Help: "git pack-objects requests of upload-pack, by result: hit (served from the cache), miss (ran pack-objects into the cache) or bypass (ran uncached).",
		}, []string{"result"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_served_bytes_total",
			Help: "Pack bytes sent to upload-pack from the cache, by result: hit or miss.",
		}, []string{"result"}),
		generatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_generated_bytes_total",
			Help: "Pack bytes git pack-objects wrote into the cache.",
		}),
		runDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gitssh_pack_cache_pack_objects_duration_seconds",
			Help:    "Time git pack-objects ran to fill a cache entry.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_pack_cache_evictions_total",
			Help: "Finished entries removed, by reason: ttl or size.",
		}, []string{"reason"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_pack_cache_bytes",
			Help: "Bytes held by finished cache entries.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_pack_cache_entries",
			Help: "Cache entries, finished or being written.",
		}),
	}
	// Every series from the start, at 0, as the SSH server's.
	for _, r := range []string{resultHit, resultMiss, resultBypass} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{resultHit, resultMiss} {
		m.servedBytes.WithLabelValues(r)
	}
	for _, r := range []string{"ttl", "size"} {
		m.evictions.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	m.requests = register(reg, m.requests)
	m.servedBytes = register(reg, m.servedBytes)
	m.generatedBytes = register(reg, m.generatedBytes)
	m.runDuration = register(reg, m.runDuration)
	m.evictions = register(reg, m.evictions)
	m.bytes = register(reg, m.bytes)
	m.entries = register(reg, m.entries)
	return m
}

// register registers c, or returns the collector registered already under
// its name (several caches in one process add up), as sshserver's.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		if existing, ok := dup.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		panic(err) // a name taken by another kind of metric: a programming error
	}
	return c
}
