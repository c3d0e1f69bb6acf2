package runc

import (
	"context"
	"sort"
	"time"
)

// loop refills pools, expires sticky and old containers, checks health and
// reconciles, until Close.
func (p *Pool) loop() {
	defer p.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastHealth, lastReconcile := time.Now(), time.Now()
	ctx := context.Background()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		case <-p.kick:
		}
		p.expire()
		p.refill(ctx)
		if time.Since(lastHealth) >= p.cfg.HealthEvery {
			lastHealth = time.Now()
			p.healthCheck(ctx)
		}
		if time.Since(lastReconcile) >= p.cfg.ReconcileEvery {
			lastReconcile = time.Now()
			if err := p.Reconcile(ctx); err != nil {
				p.log.Warn("runtime pool: reconcile failed", "err", err)
			}
		}
	}
}

// expire destroys sticky containers past the idle window and idle ones past
// their lifetime.
func (p *Pool) expire() {
	now := time.Now()
	var gone []*container
	p.mu.Lock()
	for _, pp := range p.pools {
		for u, cs := range pp.sticky {
			for _, c := range cs {
				if now.Sub(c.lastUsed) > p.cfg.StickyIdle || now.Sub(c.created) > p.cfg.MaxLifetime {
					pp.removeSticky(u, c)
					pp.total--
					gone = append(gone, c)
				}
			}
		}
		keep := pp.fresh[:0]
		for _, c := range pp.fresh {
			if now.Sub(c.created) > p.cfg.MaxLifetime {
				pp.total--
				gone = append(gone, c)
			} else {
				keep = append(keep, c)
			}
		}
		pp.fresh = keep
	}
	if len(gone) > 0 {
		p.broadcastLocked()
	}
	p.mu.Unlock()
	for _, c := range gone {
		p.destroy(c, "expired")
	}
}

// refill starts containers until each pool has MinIdle fresh ones (within
// its maximum), one at a time.
func (p *Pool) refill(ctx context.Context) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		var pp *providerPool
		names := make([]string, 0, len(p.pools))
		for n := range p.pools {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			x := p.pools[n]
			if len(x.fresh)+x.starting < x.size.MinIdle && x.total < x.size.MaxTotal {
				pp = x
				break
			}
		}
		if pp == nil {
			p.mu.Unlock()
			return
		}
		pp.total++
		pp.starting++
		p.mu.Unlock()
		c, err := p.start(ctx, pp.name)
		p.mu.Lock()
		pp.starting--
		if err != nil || p.closed {
			pp.total--
			p.mu.Unlock()
			if err != nil {
				p.metrics.failures.WithLabelValues(pp.name, "start").Inc()
				p.log.Warn("runtime pool: refill failed", "provider", pp.name, "err", err)
				return
			}
			p.destroy(c, "closed")
			return
		}
		pp.fresh = append(pp.fresh, c)
		p.metrics.refills.WithLabelValues(pp.name).Inc()
		p.broadcastLocked()
		p.mu.Unlock()
	}
}

// healthCheck pings every fresh container, destroying those that fail.
func (p *Pool) healthCheck(ctx context.Context) {
	p.mu.Lock()
	var check []*container
	for _, pp := range p.pools {
		check = append(check, pp.fresh...)
		pp.fresh = nil
	}
	p.mu.Unlock()
	var good, bad []*container
	for _, c := range check {
		if err := ping(ctx, c.socket()); err != nil {
			p.log.Warn("runtime pool: health check failed", "container", c.id, "err", err)
			p.metrics.failures.WithLabelValues(c.provider, "health").Inc()
			bad = append(bad, c)
		} else {
			good = append(good, c)
		}
	}
	p.mu.Lock()
	for _, c := range good {
		pp := p.pool(c.provider)
		pp.fresh = append(pp.fresh, c)
	}
	for _, c := range bad {
		p.pool(c.provider).total--
	}
	p.broadcastLocked()
	p.mu.Unlock()
	for _, c := range bad {
		p.destroy(c, "unhealthy")
	}
}
