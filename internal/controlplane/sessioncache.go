package controlplane

import (
	"sync"
	"time"

	"polydev/internal/store"
)

// DefaultSessionCache is how long a session lookup is reused when
// Config.SessionCache is 0.
const DefaultSessionCache = 2 * time.Second

// sessionCache keeps session lookups for a moment, so that the requests a
// client makes in a burst — a chat turn fetches the conversation, the
// runtime key and its credential, then posts the message — look the
// session up in the store once, and the message's time to first byte
// holds no session lookup. Every revocation this process makes (logout,
// password change, account deletion) drops the entries it concerns at
// once; one made by another control plane instance on the same database
// takes effect here within the cache's lifetime (docs/security.md).
type sessionCache struct {
	ttl time.Duration // ≤ 0: off

	mu   sync.Mutex
	m    map[[32]byte]cachedSession
	next time.Time // when expired entries are swept next
	// gen counts revocations: a lookup that began before one is not
	// cached, since it may have read the session before it was revoked.
	gen uint64
}

type cachedSession struct {
	sess  store.Session
	until time.Time
}

// get returns a copy of the session cached for hash, if it is still fresh
// and unexpired at now; on a miss, the generation to hand put after the
// store lookup.
func (c *sessionCache) get(hash [32]byte, now time.Time) (*store.Session, uint64, bool) {
	if c.ttl <= 0 {
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[hash]
	if !ok || !now.Before(e.until) || !now.Before(e.sess.ExpiresAt) {
		return nil, c.gen, false
	}
	s := e.sess
	return &s, c.gen, true
}

// put caches s, looked up at now under hash by a lookup that began at
// generation gen — unless a revocation has happened since.
func (c *sessionCache) put(hash [32]byte, s *store.Session, now time.Time, gen uint64) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil {
		c.m = map[[32]byte]cachedSession{}
	}
	if now.After(c.next) {
		for h, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, h)
			}
		}
		c.next = now.Add(c.ttl)
	}
	c.m[hash] = cachedSession{sess: *s, until: now.Add(c.ttl)}
}

// dropUser forgets every cached session of user, and keeps lookups under
// way from caching what they read. Call it after the revocation is stored.
func (c *sessionCache) dropUser(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for h, e := range c.m {
		if e.sess.UserID == user {
			delete(c.m, h)
		}
	}
}
