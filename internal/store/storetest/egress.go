package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"polydev/internal/store"
)

// The egress-port rules of store/egress.go, on a small range starting
// where the first user's default port falls, so the expected ports can be
// written down.

// consecutiveUsers creates n users and checks their numbers follow each
// other (a fresh store hands them out so), returning them in order.
func consecutiveUsers(t *testing.T, s store.Store, n int) []*store.User {
	t.Helper()
	var us []*store.User
	for i := range n {
		u := mustCreateUser(t, s)
		if i > 0 && u.Number != us[0].Number+int64(i) {
			t.Fatalf("user numbers %d then %d: a fresh store must number consecutively", us[i-1].Number, u.Number)
		}
		us = append(us, u)
	}
	return us
}

// rangeFrom is a range of size ports whose base is u's default port.
func rangeFrom(u *store.User, base, size int) store.PortRange {
	return store.PortRange{Base: base - int(u.Number) + 1, Size: size}
}

func link(t *testing.T, s store.Store, u *store.User, provider string, r store.PortRange) (*store.ProviderToken, bool) {
	t.Helper()
	tok := &store.ProviderToken{Provider: provider, EncryptedRefreshToken: "AgAg-sealed-" + provider + "-" + u.ID}
	first, err := s.LinkProviderToken(ctx(), u.ID, tok, r)
	if err != nil {
		t.Fatalf("LinkProviderToken(%s, %s): %v", u.Email, provider, err)
	}
	return tok, first
}

func portOf(t *testing.T, s store.Store, u *store.User, provider string) int {
	t.Helper()
	tok, err := s.ProviderToken(ctx(), u.ID, provider)
	if err != nil {
		t.Fatalf("ProviderToken(%s, %s): %v", u.Email, provider, err)
	}
	return tok.EgressPort
}

func testEgressPorts(t *testing.T, s store.Store) {
	us := consecutiveUsers(t, s, 3)
	a, b, c := us[0], us[1], us[2]
	r := rangeFrom(a, 20001, 6) // defaults: a 20001, b 20002, c 20003; free for rotation: 20004..20006

	// First links: the user's default port, shared by their providers.
	ta, first := link(t, s, a, "openai", r)
	if !first || ta.EgressPort != 20001 || ta.EgressIP != "" || !ta.LastRotatedAt.IsZero() || ta.CreatedAt.IsZero() || ta.UserID != a.ID {
		t.Errorf("first link of a: first=%v %+v; want port 20001, no IP, no rotation", first, ta)
	}
	if tb, _ := link(t, s, a, "anthropic", r); tb.EgressPort != 20001 {
		t.Errorf("a's second provider: port %d; want the shared default 20001", tb.EgressPort)
	}
	if tb, _ := link(t, s, b, "openai", r); tb.EgressPort != 20002 {
		t.Errorf("b's first link: port %d; want 20002", tb.EgressPort)
	}

	// Linking again replaces the token and keeps the rest.
	noErr(t, "SetEgressIP", s.SetEgressIP(ctx(), a.ID, "openai", 20001, "203.0.113.1"))
	again := &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: "AgAg-new", Scopes: []string{"api_key"}}
	first, err := s.LinkProviderToken(ctx(), a.ID, again, r)
	noErr(t, "LinkProviderToken(again)", err)
	if first || again.EgressPort != 20001 || again.EgressIP != "203.0.113.1" || !again.CreatedAt.Equal(ta.CreatedAt) ||
		again.EncryptedRefreshToken != "AgAg-new" || len(again.Scopes) != 1 {
		t.Errorf("link again: first=%v %+v; want the new token on the kept port, IP and creation time", first, again)
	}

	// Rotation: the highest free port, never a user's default; the
	// rotation time recorded, the IP forgotten.
	now := time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.UTC)
	old, rot, err := s.RotateEgress(ctx(), a.ID, "openai", r, now)
	noErr(t, "RotateEgress", err)
	if old != 20001 || rot.EgressPort != 20006 || !rot.LastRotatedAt.Equal(now.Truncate(time.Microsecond)) || rot.EgressIP != "" {
		t.Errorf("rotate a/openai: old %d, %+v; want 20001 → 20006 at %v with no IP", old, rot, now)
	}
	if p := portOf(t, s, a, "anthropic"); p != 20001 {
		t.Errorf("a/anthropic after rotating a/openai: port %d; want it to stay on 20001", p)
	}
	_, rot, err = s.RotateEgress(ctx(), a.ID, "openai", r, now.Add(time.Second))
	noErr(t, "RotateEgress(again)", err)
	if rot.EgressPort != 20005 {
		t.Errorf("second rotation: port %d; want 20005 (20006 was a's own until this moment)", rot.EgressPort)
	}
	// b rotates: 20006 was released by a, so it is the highest free port.
	_, rot, err = s.RotateEgress(ctx(), b.ID, "openai", r, now)
	noErr(t, "RotateEgress(b)", err)
	if rot.EgressPort != 20006 {
		t.Errorf("b's rotation: port %d; want 20006, released by a's second rotation", rot.EgressPort)
	}
	// c has linked nothing, yet its default port 20003 is reserved:
	// rotations fill 20004 and then run out.
	_, rot, err = s.RotateEgress(ctx(), a.ID, "anthropic", r, now)
	noErr(t, "RotateEgress(a/anthropic)", err)
	if rot.EgressPort != 20004 {
		t.Errorf("a/anthropic's rotation: port %d; want 20004", rot.EgressPort)
	}
	_, _, err = s.RotateEgress(ctx(), b.ID, "openai", r, now)
	wantErr(t, "RotateEgress with every port taken or reserved", err, store.ErrPortsExhausted)
	wantErr(t, "ErrPortsExhausted is a conflict", err, store.ErrConflict)
	if p := portOf(t, s, b, "openai"); p != 20006 {
		t.Errorf("b after a refused rotation: port %d; want it unchanged at 20006", p)
	}
	// a's default, no longer used by a's tokens, was released but stays
	// reserved for a: a's next provider gets it back.
	if tg, _ := link(t, s, a, "google", r); tg.EgressPort != 20001 {
		t.Errorf("a/google: port %d; want a's default 20001", tg.EgressPort)
	}
	// c's default is free: c links on it.
	if tc, _ := link(t, s, c, "google", r); tc.EgressPort != 20003 {
		t.Errorf("c/google: port %d; want c's default 20003", tc.EgressPort)
	}

	// A port another user holds cannot be put; a released one can.
	wantErr(t, "PutProviderToken on another user's port", s.PutProviderToken(ctx(), c.ID, token(c, "openai", 20005)), store.ErrConflict)
	noErr(t, "DeleteProviderToken(a/openai)", s.DeleteProviderToken(ctx(), a.ID, "openai"))
	noErr(t, "PutProviderToken on a released port", s.PutProviderToken(ctx(), c.ID, token(c, "openai", 20005)))

	// Out of range, unknown provider, not linked, bad range.
	wantErr(t, "LinkProviderToken(unknown provider)", func() error {
		_, err := s.LinkProviderToken(ctx(), a.ID, &store.ProviderToken{Provider: "acme", EncryptedRefreshToken: "x"}, r)
		return err
	}(), store.ErrInvalid)
	_, _, err = s.RotateEgress(ctx(), c.ID, "anthropic", r, now)
	wantErr(t, "RotateEgress(not linked)", err, store.ErrNotFound)
	_, _, err = s.RotateEgress(ctx(), a.ID, "google", store.PortRange{Base: 65535, Size: 2}, now)
	wantErr(t, "RotateEgress(range past 65535)", err, store.ErrInvalid)
	_, err = s.ProviderToken(ctx(), c.ID, "anthropic")
	wantErr(t, "ProviderToken(not linked)", err, store.ErrNotFound)
}

// testEgressExhausted: a user whose default port is taken or outside the
// range gets a free port, or a clear error and no token.
func testEgressExhausted(t *testing.T, s store.Store) {
	us := consecutiveUsers(t, s, 4)
	a, b, c, d := us[0], us[1], us[2], us[3]
	r := rangeFrom(a, 30001, 3) // defaults a 30001, b 30002, c 30003; d's 30004 is outside
	// b's default is taken before b links (through the raw PutProviderToken,
	// standing in for a port a user rotated to before b registered).
	noErr(t, "PutProviderToken(a on b's default)", s.PutProviderToken(ctx(), a.ID, token(a, "google", 30002)))
	link(t, s, a, "openai", r) // 30001
	_, err := s.LinkProviderToken(ctx(), b.ID, &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: "x"}, r)
	wantErr(t, "b's default held and no free port (30003 is c's)", err, store.ErrPortsExhausted)
	if ts, _ := s.ProviderTokens(ctx(), b.ID); len(ts) != 0 {
		t.Errorf("a refused link stored %d tokens; want none", len(ts))
	}
	if tc, _ := link(t, s, c, "openai", r); tc.EgressPort != 30003 {
		t.Errorf("c: port %d; want 30003", tc.EgressPort)
	}
	_, err = s.LinkProviderToken(ctx(), d.ID, &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: "x"}, r)
	wantErr(t, "d's default outside the range and no free port", err, store.ErrPortsExhausted)

	// Erasing c frees its port and its reservation: b and d can link.
	noErr(t, "DeleteUser(c)", s.DeleteUser(ctx(), c.ID))
	if tb, _ := link(t, s, b, "openai", r); tb.EgressPort != 30003 {
		t.Errorf("b after c's erasure: port %d; want 30003, the highest free port", tb.EgressPort)
	}
	// a's extra port released: it is b's default, reserved for b, so d
	// still has nothing; once a is erased, a's port is d's.
	noErr(t, "DeleteProviderToken(a/google)", s.DeleteProviderToken(ctx(), a.ID, "google"))
	_, err = s.LinkProviderToken(ctx(), d.ID, &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: "x"}, r)
	wantErr(t, "d with only b's reserved default free", err, store.ErrPortsExhausted)
	noErr(t, "DeleteUser(a)", s.DeleteUser(ctx(), a.ID))
	if td, _ := link(t, s, d, "openai", r); td.EgressPort != 30001 {
		t.Errorf("d after a's erasure: port %d; want 30001", td.EgressPort)
	}
}

func testEgressRecords(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	r := store.PortRange{Base: 10001, Size: 1000}
	ta, _ := link(t, s, a, "openai", r)
	tb, _ := link(t, s, b, "openai", r)
	if ta.EgressPort == tb.EgressPort {
		t.Fatalf("two users share port %d", ta.EgressPort)
	}

	// Egress IP: recorded for the current port only.
	noErr(t, "SetEgressIP", s.SetEgressIP(ctx(), a.ID, "openai", ta.EgressPort, "198.51.100.7"))
	if got, _ := s.ProviderToken(ctx(), a.ID, "openai"); got == nil || got.EgressIP != "198.51.100.7" {
		t.Errorf("egress IP after SetEgressIP: %+v", got)
	}
	wantErr(t, "SetEgressIP(stale port)", s.SetEgressIP(ctx(), a.ID, "openai", ta.EgressPort+1, "198.51.100.8"), store.ErrConflict)
	wantErr(t, "SetEgressIP(not linked)", s.SetEgressIP(ctx(), a.ID, "google", ta.EgressPort, "198.51.100.8"), store.ErrNotFound)

	// Last use: recorded, never moved backwards.
	t1 := time.Date(2031, 1, 2, 3, 4, 5, 999, time.UTC)
	noErr(t, "TouchProviderToken", s.TouchProviderToken(ctx(), a.ID, "openai", t1))
	noErr(t, "TouchProviderToken(earlier)", s.TouchProviderToken(ctx(), a.ID, "openai", t1.Add(-time.Hour)))
	if got, _ := s.ProviderToken(ctx(), a.ID, "openai"); got == nil || !got.LastUsedAt.Equal(t1.Truncate(time.Microsecond)) {
		t.Errorf("last use: %+v; want %v", got, t1)
	}
	wantErr(t, "TouchProviderToken(not linked)", s.TouchProviderToken(ctx(), a.ID, "google", t1), store.ErrNotFound)

	// Tenant isolation: a reaches none of b's.
	_, err := s.ProviderToken(ctx(), a.ID, "google")
	wantErr(t, "ProviderToken(a, none)", err, store.ErrNotFound)
	noErr(t, "DeleteProviderToken(a)", s.DeleteProviderToken(ctx(), a.ID, "openai"))
	_, err = s.ProviderToken(ctx(), a.ID, "openai")
	wantErr(t, "a reads b's token through its own provider name", err, store.ErrNotFound)
	_, _, err = s.RotateEgress(ctx(), a.ID, "openai", r, t1)
	wantErr(t, "a rotates (b's) openai", err, store.ErrNotFound)
	wantErr(t, "a sets (b's) egress IP", s.SetEgressIP(ctx(), a.ID, "openai", tb.EgressPort, "192.0.2.66"), store.ErrNotFound)
	wantErr(t, "a touches (b's) token", s.TouchProviderToken(ctx(), a.ID, "openai", t1), store.ErrNotFound)
	wantErr(t, "a links for b", func() error {
		_, err := s.LinkProviderToken(ctx(), a.ID, token(b, "anthropic", 0), r)
		return err
	}(), store.ErrNotFound)
	got, err := s.ProviderToken(ctx(), b.ID, "openai")
	noErr(t, "ProviderToken(b)", err)
	if got.EgressPort != tb.EgressPort || got.EgressIP != "" || !got.LastUsedAt.IsZero() {
		t.Errorf("b's token after a's attempts: %+v", got)
	}
}

// testEgressConcurrentRotations: users rotating at once never end up on
// the same port, nor on anyone's default port.
func testEgressConcurrentRotations(t *testing.T, s store.Store) {
	const users, rounds = 6, 4
	us := consecutiveUsers(t, s, users)
	r := rangeFrom(us[0], 10001, 40)
	for _, u := range us {
		link(t, s, u, "openai", r)
	}
	var wg sync.WaitGroup
	errs := make(chan error, users*rounds)
	for _, u := range us {
		wg.Go(func() {
			for range rounds {
				if _, _, err := s.RotateEgress(ctx(), u.ID, "openai", r, time.Now()); err != nil {
					errs <- fmt.Errorf("%s: %w", u.Email, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent RotateEgress: %v", err)
	}
	seen := map[int]string{}
	for _, u := range us {
		p := portOf(t, s, u, "openai")
		if other, ok := seen[p]; ok {
			t.Errorf("port %d held by %s and %s", p, other, u.Email)
		}
		seen[p] = u.Email
		if p < r.Base+users || !r.Contains(p) {
			t.Errorf("%s rotated to %d, a default port or outside %+v", u.Email, p, r)
		}
	}
}

// testEgressConcurrentLinks: the same provider linked twice at once is one
// first link and one relink, on one port.
func testEgressConcurrentLinks(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	r := store.PortRange{Base: 10001, Size: 1000}
	const n = 4
	var wg sync.WaitGroup
	firsts := make(chan bool, n)
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			tok := &store.ProviderToken{Provider: "google", EncryptedRefreshToken: fmt.Sprintf("AgAg-%d", i)}
			first, err := s.LinkProviderToken(ctx(), u.ID, tok, r)
			if err != nil {
				errs <- err
				return
			}
			firsts <- first
		})
	}
	wg.Wait()
	close(errs)
	close(firsts)
	for err := range errs {
		t.Errorf("concurrent LinkProviderToken: %v", err)
	}
	count := 0
	for f := range firsts {
		if f {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d of %d concurrent links were first links; want exactly 1", count, n)
	}
	if p := portOf(t, s, u, "google"); p != r.Default(u.Number) {
		t.Errorf("port %d; want the default %d", p, r.Default(u.Number))
	}
}
