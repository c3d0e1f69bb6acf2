// Package metrics serves Prometheus metrics in the text exposition format.
// Components expose their series as prometheus.Collectors (the runtime pool
// does with Collector()); main registers them on one Registry and mounts
// Handler at /metrics.
//
// The library is github.com/prometheus/client_golang, the reference client:
// it gets the format's details right (escaping, histograms, content
// negotiation) and is what later metrics will extend.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors; register components' collectors on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg at GET /metrics.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
