// Package promreg registers Prometheus collectors that several servers or caches in one
// process share (tests run many): a second registration returns the first collector.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c, or returns the collector registered already under its name.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
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
