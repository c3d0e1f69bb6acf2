package runc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the pool's Prometheus series. The pool counts into them;
// Collector exposes them, plus gauges read from the pool at scrape time.
type metrics struct {
	checkouts    *prometheus.CounterVec
	waits        *prometheus.CounterVec
	busy         *prometheus.CounterVec
	waitSeconds  *prometheus.HistogramVec
	startSeconds *prometheus.HistogramVec
	failures     *prometheus.CounterVec
	destroyed    *prometheus.CounterVec
	refills      *prometheus.CounterVec
	reclaimed    prometheus.Counter
}

const ns = "polydev_runtime"

func newMetrics() *metrics {
	return &metrics{
		checkouts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "checkouts_total",
			Help: "Containers checked out, by provider and how: sticky (same user again), warm (fresh from the pool), cold (started for the request)."},
			[]string{"provider", "kind"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "checkout_waits_total",
			Help: "Checkouts that had to queue because the pool was full."}, []string{"provider"}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "busy_total",
			Help: "Checkouts refused as busy (queue full or wait ran out; HTTP 503)."}, []string{"provider"}),
		waitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "checkout_wait_seconds",
			Help:    "Time from checkout request to a container in hand, cold starts included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"provider"}),
		startSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "container_start_seconds",
			Help:    "Time to start a container until its worker answers.",
			Buckets: []float64{.025, .05, .075, .1, .15, .2, .3, .5, 1, 2.5, 5, 10}}, []string{"provider"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "failures_total",
			Help: "Failures by stage: start, health, task."}, []string{"provider", "stage"}),
		destroyed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "containers_destroyed_total",
			Help: "Containers destroyed, by reason."}, []string{"provider", "reason"}),
		refills: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "refills_total",
			Help: "Fresh containers added by the background refill."}, []string{"provider"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reclaimed_total",
			Help: "Leftovers (containers, cgroups, mounts, directories) removed by start-up reclaim and reconcile."}),
	}
}

var (
	sizeDesc = prometheus.NewDesc(ns+"_pool_containers", "Containers in the pool by state: idle (fresh), sticky (idle, reserved for the user it served), busy, starting.",
		[]string{"provider", "state"}, nil)
	maxDesc  = prometheus.NewDesc(ns+"_pool_max_containers", "The pool's maximum size.", []string{"provider"}, nil)
	waitDesc = prometheus.NewDesc(ns+"_checkout_waiters", "Checkouts waiting now.", []string{"provider"}, nil)
)

// Collector returns the pool's metrics, for a Prometheus registry:
// reg.MustRegister(pool.Collector()).
func (p *Pool) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Pool }

func (c collector) vecs() []prometheus.Collector {
	m := c.p.metrics
	return []prometheus.Collector{m.checkouts, m.waits, m.busy, m.waitSeconds, m.startSeconds, m.failures, m.destroyed, m.refills, m.reclaimed}
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
	ch <- sizeDesc
	ch <- maxDesc
	ch <- waitDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.vecs() {
		v.Collect(ch)
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	for _, pp := range c.p.pools {
		sticky := 0
		for _, cs := range pp.sticky {
			sticky += len(cs)
		}
		busy := pp.total - len(pp.fresh) - sticky - pp.starting
		for _, s := range []struct {
			state string
			n     int
		}{{"idle", len(pp.fresh)}, {"sticky", sticky}, {"busy", busy}, {"starting", pp.starting}} {
			ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(s.n), pp.name, s.state)
		}
		ch <- prometheus.MustNewConstMetric(maxDesc, prometheus.GaugeValue, float64(pp.size.MaxTotal), pp.name)
		ch <- prometheus.MustNewConstMetric(waitDesc, prometheus.GaugeValue, float64(pp.waiters), pp.name)
	}
}
