package controlplane

import (
	"testing"
	"time"

	"polydev/internal/store"
)

// A lookup that was under way when a revocation happened is not cached:
// it may have read the session just before the revocation was stored.
func TestSessionCacheSkipsLookupsOlderThanARevocation(t *testing.T) {
	c := &sessionCache{ttl: time.Minute}
	now := time.Now()
	sess := &store.Session{ID: "s", UserID: "u", ExpiresAt: now.Add(time.Hour)}
	h1, h2 := [32]byte{1}, [32]byte{2}

	_, gen, ok := c.get(h1, now)
	if ok {
		t.Fatal("hit on an empty cache")
	}
	c.dropUser("someone else") // a revocation while the lookup runs
	c.put(h1, sess, now, gen)
	if _, _, ok := c.get(h1, now); ok {
		t.Fatal("a lookup begun before a revocation was cached")
	}

	_, gen, _ = c.get(h2, now)
	c.put(h2, sess, now, gen)
	if got, _, ok := c.get(h2, now.Add(time.Second)); !ok || got.ID != "s" {
		t.Fatalf("a lookup with no revocation since: %v, %v; want it cached", got, ok)
	}
	if _, _, ok := c.get(h2, now.Add(time.Minute)); ok {
		t.Fatal("an entry was served after the cache lifetime")
	}
	c.dropUser("u")
	if _, _, ok := c.get(h2, now); ok {
		t.Fatal("dropUser left the user's session cached")
	}
}
