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
}

type cachedSession struct {
	sess  store.Session
	until time.Time
}

// get returns a copy of the session cached for hash, if it is still fresh
// and unexpired at now.
func (c *sessionCache) get(hash [32]byte, now time.Time) (*store.Session, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[hash]
	if !ok || !now.Before(e.until) || !now.Before(e.sess.ExpiresAt) {
		return nil, false
	}
	s := e.sess
	return &s, true
}

// put caches s, looked up at now, under hash.
func (c *sessionCache) put(hash [32]byte, s *store.Session, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
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

// dropUser forgets every cached session of user.
func (c *sessionCache) dropUser(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.m {
		if e.sess.UserID == user {
			delete(c.m, h)
		}
	}
}
