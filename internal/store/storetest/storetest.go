// Package storetest is the conformance suite every store.Store backend
// runs: the behaviour the control plane relies on, and above all tenant
// isolation — user A can never read, list, update or delete user B's rows
// by any id, and B's rows are indistinguishable from missing ones.
//
// A backend's test calls Run with a function that opens a fresh, migrated,
// empty store for each subtest.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"polydev/internal/store"
)

// Run runs the whole suite. open must return a fresh, migrated, empty
// store; Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Users", testUsers},
		{"UserNumbersUnderConcurrency", testUserNumbers},
		{"Credentials", testCredentials},
		{"Sessions", testSessions},
		{"Audit", testAudit},
		{"ProviderTokens", testProviderTokens},
		{"EgressPorts", testEgressPorts},
		{"EgressExhausted", testEgressExhausted},
		{"EgressRecords", testEgressRecords},
		{"EgressConcurrentRotations", testEgressConcurrentRotations},
		{"EgressConcurrentLinks", testEgressConcurrentLinks},
		{"Conversations", testConversations},
		{"ConversationPages", testConversationPages},
		{"MessagePages", testMessagePages},
		{"MessageStatus", testMessageStatus},
		{"AddMessagesAtomic", testAddMessagesAtomic},
		{"FinishMessage", testFinishMessage},
		{"ChatTurn", testChatTurn},
		{"TenantIsolation", testTenantIsolation},
		{"Erasure", testErasure},
		{"Timestamps", testTimestamps},
		{"HostileValues", testHostileValues},
		{"VMSessions", testVMSessions},
		{"VMSessionsRace", testVMSessionsRace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
			})
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("Ping on a migrated store: %v", err)
			}
			tc.fn(t, s)
		})
	}
}

// NewID returns a random UUID (version 4) in canonical form.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func ctx() context.Context { return context.Background() }

// newUser returns a complete, valid user record with unique id and email.
func newUser() *store.User {
	id := NewID()
	salt := make([]byte, 16)
	rand.Read(salt)
	return &store.User{
		ID:                id,
		Email:             "u-" + id[:8] + "@example.test",
		KDFParams:         []byte(`{"version":1,"algorithm":"pbkdf2-sha256","salt":"AAAAAAAAAAAAAAAAAAAAAA==","iterations":600000}`),
		AuthHash:          bytes.Repeat([]byte{0xaa}, 32),
		AuthSalt:          salt,
		AuthAlgo:          "argon2id$m=19456,t=2,p=1",
		WrappedAccountKey: "AQ-wrapped-account-" + id,
		WrappedPrivateKey: "AQ-wrapped-private-" + id,
		PublicKey:         "Aw-public-" + id,
	}
}

func mustCreateUser(t *testing.T, s store.Store) *store.User {
	t.Helper()
	u := newUser()
	if err := s.CreateUser(ctx(), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return u
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v; want %v", what, err, want)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testUsers(t *testing.T, s store.Store) {
	a := mustCreateUser(t, s)
	b := mustCreateUser(t, s)
	if a.Number != 1 || b.Number != 2 {
		t.Errorf("user numbers %d, %d; want 1, 2", a.Number, b.Number)
	}
	if a.CreatedAt.IsZero() || a.UpdatedAt.IsZero() {
		t.Error("CreateUser did not set CreatedAt/UpdatedAt")
	}
	got, err := s.User(ctx(), a.ID)
	noErr(t, "User", err)
	if got.Email != a.Email || !bytes.Equal(got.KDFParams, a.KDFParams) || !bytes.Equal(got.AuthHash, a.AuthHash) ||
		!bytes.Equal(got.AuthSalt, a.AuthSalt) || got.AuthAlgo != a.AuthAlgo || got.WrappedAccountKey != a.WrappedAccountKey ||
		got.WrappedPrivateKey != a.WrappedPrivateKey || got.PublicKey != a.PublicKey || got.Number != 1 {
		t.Errorf("User returned %+v; want the record created %+v", got, a)
	}
	byEmail, err := s.UserByEmail(ctx(), b.Email)
	noErr(t, "UserByEmail", err)
	if byEmail.ID != b.ID {
		t.Errorf("UserByEmail returned %s; want %s", byEmail.ID, b.ID)
	}
	_, err = s.UserByEmail(ctx(), "nobody@example.test")
	wantErr(t, "UserByEmail(unknown)", err, store.ErrNotFound)
	_, err = s.User(ctx(), NewID())
	wantErr(t, "User(unknown)", err, store.ErrNotFound)

	dup := newUser()
	dup.Email = a.Email
	wantErr(t, "CreateUser(duplicate email)", s.CreateUser(ctx(), dup), store.ErrConflict)
	dupID := newUser()
	dupID.ID = a.ID
	wantErr(t, "CreateUser(duplicate id)", s.CreateUser(ctx(), dupID), store.ErrConflict)
	mixed := newUser()
	mixed.Email = "Mixed.Case@Example.test"
	wantErr(t, "CreateUser(email not lowercase)", s.CreateUser(ctx(), mixed), store.ErrInvalid)
	noKDF := newUser()
	noKDF.KDFParams = nil
	wantErr(t, "CreateUser(no KDF record)", s.CreateUser(ctx(), noKDF), store.ErrInvalid)
}

func testUserNumbers(t *testing.T, s store.Store) {
	const n = 20
	var wg sync.WaitGroup
	nums := make([]int64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			u := newUser()
			errs[i] = s.CreateUser(ctx(), u)
			nums[i] = u.Number
		})
	}
	wg.Wait()
	for _, err := range errs {
		noErr(t, "concurrent CreateUser", err)
	}
	slices.Sort(nums)
	for i, got := range nums {
		if got != int64(i+1) {
			t.Fatalf("user numbers under concurrency: %v; want 1..%d without gaps or duplicates", nums, n)
		}
	}
}

func newSession(u *store.User, now time.Time, ttl time.Duration) *store.Session {
	h := make([]byte, 32)
	rand.Read(h)
	return &store.Session{ID: NewID(), UserID: u.ID, TokenHash: h, CreatedAt: now, ExpiresAt: now.Add(ttl), LastSeenAt: now,
		ClientIP: "192.0.2.1", UserAgent: "storetest"}
}

func testCredentials(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	now := time.Now().UTC()
	keep, other := newSession(u, now, time.Hour), newSession(u, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, keep))
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, other))
	c := store.Credentials{
		KDFParams:         []byte(`{"version":1,"algorithm":"pbkdf2-sha256","salt":"AQEBAQEBAQEBAQEBAQEBAQ==","iterations":700000}`),
		AuthHash:          bytes.Repeat([]byte{0xbb}, 32),
		AuthSalt:          bytes.Repeat([]byte{0xcc}, 16),
		AuthAlgo:          "argon2id$m=19456,t=2,p=1",
		WrappedAccountKey: "AQ-rewrapped",
		WrappedPrivateKey: "AQ-rewrapped-private",
	}
	noErr(t, "SetCredentials", s.SetCredentials(ctx(), u.ID, c, keep.ID))
	got, err := s.User(ctx(), u.ID)
	noErr(t, "User", err)
	if !bytes.Equal(got.KDFParams, c.KDFParams) || !bytes.Equal(got.AuthHash, c.AuthHash) || !bytes.Equal(got.AuthSalt, c.AuthSalt) ||
		got.WrappedAccountKey != c.WrappedAccountKey || got.WrappedPrivateKey != c.WrappedPrivateKey {
		t.Errorf("credentials not replaced: %+v", got)
	}
	if got.PublicKey != u.PublicKey || got.Email != u.Email || got.Number != u.Number {
		t.Error("SetCredentials changed fields it does not own")
	}
	if !got.UpdatedAt.After(u.UpdatedAt) && !got.UpdatedAt.Equal(u.UpdatedAt) {
		t.Error("UpdatedAt went backwards")
	}
	if _, err := s.ActiveSession(ctx(), keep.TokenHash, now.Add(time.Minute)); err != nil {
		t.Errorf("the kept session was revoked: %v", err)
	}
	_, err = s.ActiveSession(ctx(), other.TokenHash, now.Add(time.Minute))
	wantErr(t, "ActiveSession(other session after password change)", err, store.ErrNotFound)
	wantErr(t, "SetCredentials(unknown user)", s.SetCredentials(ctx(), NewID(), c, ""), store.ErrNotFound)
}

func testSessions(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	now := time.Now().UTC().Truncate(time.Microsecond)
	sess := newSession(u, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, sess))
	later := now.Add(10 * time.Minute)
	got, err := s.ActiveSession(ctx(), sess.TokenHash, later)
	noErr(t, "ActiveSession", err)
	if got.ID != sess.ID || got.UserID != u.ID || !got.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Errorf("ActiveSession returned %+v; want %+v", got, sess)
	}
	again, err := s.ActiveSession(ctx(), sess.TokenHash, later.Add(time.Second))
	noErr(t, "ActiveSession", err)
	if !again.LastSeenAt.Equal(later) {
		t.Errorf("LastSeenAt = %v; want the previous lookup's time %v", again.LastSeenAt, later)
	}
	_, err = s.ActiveSession(ctx(), sess.TokenHash, now.Add(time.Hour+time.Second))
	wantErr(t, "ActiveSession(expired)", err, store.ErrNotFound)
	_, err = s.ActiveSession(ctx(), bytes.Repeat([]byte{1}, 32), later)
	wantErr(t, "ActiveSession(unknown hash)", err, store.ErrNotFound)

	noErr(t, "RevokeSession", s.RevokeSession(ctx(), u.ID, sess.ID, later))
	_, err = s.ActiveSession(ctx(), sess.TokenHash, later)
	wantErr(t, "ActiveSession(revoked)", err, store.ErrNotFound)
	wantErr(t, "RevokeSession(unknown)", s.RevokeSession(ctx(), u.ID, NewID(), later), store.ErrNotFound)

	revoked := newSession(u, now, time.Hour)
	revoked.RevokedAt = now
	noErr(t, "CreateSession(already revoked)", s.CreateSession(ctx(), u.ID, revoked))
	_, err = s.ActiveSession(ctx(), revoked.TokenHash, later)
	wantErr(t, "ActiveSession(created revoked)", err, store.ErrNotFound)
	// Lookups out of order never move LastSeenAt backwards.
	fresh := newSession(u, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, fresh))
	s.ActiveSession(ctx(), fresh.TokenHash, now.Add(10*time.Minute))
	s.ActiveSession(ctx(), fresh.TokenHash, now.Add(5*time.Minute))
	if got, err := s.ActiveSession(ctx(), fresh.TokenHash, now.Add(6*time.Minute)); err != nil || !got.LastSeenAt.Equal(now.Add(10*time.Minute)) {
		t.Errorf("LastSeenAt after out-of-order lookups = %v (%v); want %v", got, err, now.Add(10*time.Minute))
	}

	// A use within SessionTouchInterval of the recorded one writes
	// nothing; a later one is recorded.
	touch := newSession(u, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, touch))
	soon := now.Add(store.SessionTouchInterval - time.Second)
	s.ActiveSession(ctx(), touch.TokenHash, soon)
	if got, err := s.ActiveSession(ctx(), touch.TokenHash, soon.Add(time.Second)); err != nil || !got.LastSeenAt.Equal(now) {
		t.Errorf("LastSeenAt after a use within the touch interval = %v (%v); want the creation time %v", got, err, now)
	}
	due := now.Add(store.SessionTouchInterval)
	s.ActiveSession(ctx(), touch.TokenHash, due)
	if got, err := s.ActiveSession(ctx(), touch.TokenHash, due.Add(time.Second)); err != nil || !got.LastSeenAt.Equal(due) {
		t.Errorf("LastSeenAt after a use one touch interval later = %v (%v); want %v", got, err, due)
	}

	dup := newSession(u, now, time.Hour)
	dup.TokenHash = sess.TokenHash
	wantErr(t, "CreateSession(duplicate token hash)", s.CreateSession(ctx(), u.ID, dup), store.ErrConflict)
}

func testAudit(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	for _, e := range []*store.AuditEvent{
		{UserID: a.ID, Event: "register", ClientIP: "192.0.2.1", Detail: `{}`},
		{UserID: a.ID, Event: "login_success", ClientIP: "192.0.2.1", Detail: `{"method":"password"}`},
		{UserID: b.ID, Event: "register"},
		{Event: "login_failure", ClientIP: "198.51.100.7", Detail: `{"reason":"unknown_account"}`},
	} {
		noErr(t, "Record", s.Record(ctx(), e))
		if e.ID == 0 || e.CreatedAt.IsZero() {
			t.Errorf("Record did not assign ID/CreatedAt: %+v", e)
		}
	}
	wantErr(t, "Record(unknown user)", s.Record(ctx(), &store.AuditEvent{UserID: NewID(), Event: "login_success"}), store.ErrNotFound)
	evs, err := s.AuditEvents(ctx(), a.ID, 10)
	noErr(t, "AuditEvents", err)
	if len(evs) != 2 || evs[0].Event != "login_success" || evs[1].Event != "register" {
		t.Errorf("AuditEvents(a) = %+v; want a's two events, newest first", evs)
	}
	for _, e := range evs {
		if e.UserID != a.ID {
			t.Errorf("AuditEvents(a) returned an event of %q", e.UserID)
		}
	}
	one, err := s.AuditEvents(ctx(), a.ID, 1)
	noErr(t, "AuditEvents(limit 1)", err)
	if len(one) != 1 {
		t.Errorf("AuditEvents(limit 1) returned %d events", len(one))
	}
}

func token(u *store.User, provider string, port int) *store.ProviderToken {
	return &store.ProviderToken{UserID: u.ID, Provider: provider, EncryptedRefreshToken: "AgAg-sealed-" + provider + "-" + u.ID,
		Scopes: []string{"chat", "models.read"}, EgressPort: port}
}

func testProviderTokens(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	noErr(t, "PutProviderToken", s.PutProviderToken(ctx(), u.ID, token(u, "openai", 10001)))
	noErr(t, "PutProviderToken", s.PutProviderToken(ctx(), u.ID, token(u, "anthropic", 10001)))
	replaced := token(u, "openai", 10007)
	replaced.EncryptedRefreshToken = "AgAg-new"
	replaced.Scopes = nil
	noErr(t, "PutProviderToken(replace)", s.PutProviderToken(ctx(), u.ID, replaced))
	ts, err := s.ProviderTokens(ctx(), u.ID)
	noErr(t, "ProviderTokens", err)
	if len(ts) != 2 || ts[0].Provider != "anthropic" || ts[1].Provider != "openai" {
		t.Fatalf("ProviderTokens = %+v; want anthropic and openai, by provider", ts)
	}
	if ts[1].EncryptedRefreshToken != "AgAg-new" || ts[1].EgressPort != 10007 || len(ts[1].Scopes) != 0 {
		t.Errorf("replaced token = %+v", ts[1])
	}
	if !slices.Equal(ts[0].Scopes, []string{"chat", "models.read"}) {
		t.Errorf("scopes = %v", ts[0].Scopes)
	}
	bad := token(u, "acme", 10001)
	wantErr(t, "PutProviderToken(unknown provider)", s.PutProviderToken(ctx(), u.ID, bad), store.ErrInvalid)
	noErr(t, "DeleteProviderToken", s.DeleteProviderToken(ctx(), u.ID, "openai"))
	wantErr(t, "DeleteProviderToken(again)", s.DeleteProviderToken(ctx(), u.ID, "openai"), store.ErrNotFound)
	ts, _ = s.ProviderTokens(ctx(), u.ID)
	if len(ts) != 1 {
		t.Errorf("after delete: %d tokens; want 1", len(ts))
	}
}

func conversation(u *store.User) *store.Conversation {
	return &store.Conversation{ID: NewID(), UserID: u.ID, Provider: "openai", WrappedKey: "AQ-conv-key", EncryptedTitle: "AQ-title"}
}

func message(c *store.Conversation, role string) *store.Message {
	return &store.Message{ID: NewID(), ConversationID: c.ID, Role: role, EncryptedContent: "AQ-content-" + role, Model: "gpt-test",
		TokensUsed: 12, EgressPort: 10001, EgressIP: "203.0.113.9", DurationMS: 345}
}

func testConversations(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	c1, c2 := conversation(u), conversation(u)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), u.ID, c1))
	time.Sleep(2 * time.Millisecond)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), u.ID, c2))
	wantErr(t, "CreateConversation(duplicate id)", s.CreateConversation(ctx(), u.ID, &store.Conversation{ID: c1.ID, UserID: u.ID, Provider: "openai", WrappedKey: "x"}), store.ErrConflict)
	time.Sleep(2 * time.Millisecond)
	m1, m2 := message(c1, "user"), message(c1, "assistant")
	noErr(t, "AddMessages", s.AddMessages(ctx(), u.ID, m1))
	time.Sleep(2 * time.Millisecond)
	noErr(t, "AddMessages", s.AddMessages(ctx(), u.ID, m2))
	list, _, err := s.Conversations(ctx(), u.ID, store.Page{})
	noErr(t, "Conversations", err)
	if len(list) != 2 || list[0].ID != c1.ID {
		t.Errorf("Conversations = %v; want c1 (updated by its messages) first", ids(list))
	}
	ms, _, err := s.Messages(ctx(), u.ID, c1.ID, store.Page{})
	noErr(t, "Messages", err)
	if len(ms) != 2 || ms[0].ID != m1.ID || ms[1].ID != m2.ID {
		t.Fatalf("Messages = %+v; want m1, m2", ms)
	}
	if got := ms[1]; got.Role != "assistant" || got.EncryptedContent != m2.EncryptedContent || got.TokensUsed != 12 ||
		got.Model != "gpt-test" || got.EgressPort != 10001 || got.EgressIP != "203.0.113.9" || got.DurationMS != 345 {
		t.Errorf("message came back as %+v", got)
	}
	noErr(t, "SetConversationTitle", s.SetConversationTitle(ctx(), u.ID, c2.ID, "AQ-new-title"))
	got, err := s.Conversation(ctx(), u.ID, c2.ID)
	noErr(t, "Conversation", err)
	if got.EncryptedTitle != "AQ-new-title" || got.WrappedKey != c2.WrappedKey || got.Provider != "openai" {
		t.Errorf("Conversation = %+v", got)
	}
	wantErr(t, "AddMessages(bad role)", s.AddMessages(ctx(), u.ID, message(c1, "narrator")), store.ErrInvalid)
	wantErr(t, "AddMessages(no such conversation)", s.AddMessages(ctx(), u.ID, &store.Message{ID: NewID(), ConversationID: NewID(), Role: "user", EncryptedContent: "x"}), store.ErrNotFound)
	wantErr(t, "CreateConversation(bad provider)", s.CreateConversation(ctx(), u.ID, &store.Conversation{ID: NewID(), UserID: u.ID, Provider: "acme", WrappedKey: "x"}), store.ErrInvalid)
	noErr(t, "DeleteConversation", s.DeleteConversation(ctx(), u.ID, c1.ID))
	_, err = s.Conversation(ctx(), u.ID, c1.ID)
	wantErr(t, "Conversation(deleted)", err, store.ErrNotFound)
	_, _, err = s.Messages(ctx(), u.ID, c1.ID, store.Page{})
	wantErr(t, "Messages(deleted conversation)", err, store.ErrNotFound)
}

func ids(cs []store.Conversation) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// testTenantIsolation: A acting on every one of B's ids gets ErrNotFound (or
// an empty list), and B's rows are unchanged afterwards.
func testTenantIsolation(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	now := time.Now().UTC()
	bSess := newSession(b, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), b.ID, bSess))
	noErr(t, "PutProviderToken", s.PutProviderToken(ctx(), b.ID, token(b, "google", 10002)))
	bConv := conversation(b)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), b.ID, bConv))
	bMsg := message(bConv, "user")
	noErr(t, "AddMessages", s.AddMessages(ctx(), b.ID, bMsg))
	noErr(t, "Record", s.Record(ctx(), &store.AuditEvent{UserID: b.ID, Event: "register"}))

	// Reads.
	_, err := s.Conversation(ctx(), a.ID, bConv.ID)
	wantErr(t, "A reads B's conversation", err, store.ErrNotFound)
	_, _, err = s.Messages(ctx(), a.ID, bConv.ID, store.Page{})
	wantErr(t, "A lists B's messages", err, store.ErrNotFound)
	if cs, _, err := s.Conversations(ctx(), a.ID, store.Page{}); err != nil || len(cs) != 0 {
		t.Errorf("A lists conversations: %v, %v; want none", ids(cs), err)
	}
	if ts, err := s.ProviderTokens(ctx(), a.ID); err != nil || len(ts) != 0 {
		t.Errorf("A lists provider tokens: %+v, %v; want none", ts, err)
	}
	if evs, err := s.AuditEvents(ctx(), a.ID, 100); err != nil || len(evs) != 0 {
		t.Errorf("A lists audit events: %+v, %v; want none", evs, err)
	}
	if u, err := s.User(ctx(), a.ID); err != nil || u.ID != a.ID {
		t.Errorf("User(a) = %v, %v", u, err)
	}

	// Writes and deletes.
	wantErr(t, "A renames B's conversation", s.SetConversationTitle(ctx(), a.ID, bConv.ID, "pwned"), store.ErrNotFound)
	wantErr(t, "A deletes B's conversation", s.DeleteConversation(ctx(), a.ID, bConv.ID), store.ErrNotFound)
	wantErr(t, "A adds a message to B's conversation", s.AddMessages(ctx(), a.ID, message(bConv, "user")), store.ErrNotFound)
	wantErr(t, "A revokes B's session", s.RevokeSession(ctx(), a.ID, bSess.ID, now), store.ErrNotFound)
	wantErr(t, "A deletes B's provider token", s.DeleteProviderToken(ctx(), a.ID, "google"), store.ErrNotFound)
	// Records naming B as owner, written as A: B does not exist for A.
	wantErr(t, "A creates a session for B", s.CreateSession(ctx(), a.ID, newSession(b, now, time.Hour)), store.ErrNotFound)
	wantErr(t, "A creates a conversation owned by B", s.CreateConversation(ctx(), a.ID, conversation(b)), store.ErrNotFound)
	wantErr(t, "A plants a provider token for B", s.PutProviderToken(ctx(), a.ID, token(b, "openai", 10003)), store.ErrNotFound)
	// A reusing B's conversation id for its own conversation must not
	// replace B's.
	clash := &store.Conversation{ID: bConv.ID, UserID: a.ID, Provider: "openai", WrappedKey: "x"}
	if err := s.CreateConversation(ctx(), a.ID, clash); err == nil {
		t.Error("A created a conversation with B's conversation id")
	}
	// A's password change naming B's session as the one to keep changes
	// only A's rows: B's session stays active (checked below).
	noErr(t, "SetCredentials(a, keep B's session id)", s.SetCredentials(ctx(), a.ID, store.Credentials{
		KDFParams: a.KDFParams, AuthHash: a.AuthHash, AuthSalt: a.AuthSalt, AuthAlgo: a.AuthAlgo,
		WrappedAccountKey: a.WrappedAccountKey, WrappedPrivateKey: a.WrappedPrivateKey}, bSess.ID))

	// B's rows are intact.
	if _, err := s.ActiveSession(ctx(), bSess.TokenHash, now.Add(time.Minute)); err != nil {
		t.Errorf("B's session after A's attempts: %v", err)
	}
	if c, err := s.Conversation(ctx(), b.ID, bConv.ID); err != nil || c.EncryptedTitle != bConv.EncryptedTitle {
		t.Errorf("B's conversation after A's attempts: %+v, %v", c, err)
	}
	if ms, _, err := s.Messages(ctx(), b.ID, bConv.ID, store.Page{}); err != nil || len(ms) != 1 {
		t.Errorf("B's messages after A's attempts: %d, %v; want 1", len(ms), err)
	}
	if ts, err := s.ProviderTokens(ctx(), b.ID); err != nil || len(ts) != 1 {
		t.Errorf("B's provider tokens after A's attempts: %d, %v; want 1", len(ts), err)
	}
	if evs, err := s.AuditEvents(ctx(), b.ID, 10); err != nil || len(evs) != 1 {
		t.Errorf("B's audit events: %d, %v; want 1", len(evs), err)
	}
	// Deleting A leaves B alone.
	noErr(t, "DeleteUser(a)", s.DeleteUser(ctx(), a.ID))
	if _, err := s.User(ctx(), b.ID); err != nil {
		t.Errorf("B after A's erasure: %v", err)
	}
	wantErr(t, "DeleteUser(a) again", s.DeleteUser(ctx(), a.ID), store.ErrNotFound)
}

func testErasure(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	now := time.Now().UTC()
	sess := newSession(u, now, time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, sess))
	noErr(t, "PutProviderToken", s.PutProviderToken(ctx(), u.ID, token(u, "openai", 10001)))
	c := conversation(u)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), u.ID, c))
	noErr(t, "AddMessages", s.AddMessages(ctx(), u.ID, message(c, "user")))
	noErr(t, "Record", s.Record(ctx(), &store.AuditEvent{UserID: u.ID, Event: "register"}))

	noErr(t, "DeleteUser", s.DeleteUser(ctx(), u.ID))
	_, err := s.User(ctx(), u.ID)
	wantErr(t, "User(erased)", err, store.ErrNotFound)
	_, err = s.UserByEmail(ctx(), u.Email)
	wantErr(t, "UserByEmail(erased)", err, store.ErrNotFound)
	_, err = s.ActiveSession(ctx(), sess.TokenHash, now)
	wantErr(t, "ActiveSession(erased user)", err, store.ErrNotFound)
	_, err = s.Conversation(ctx(), u.ID, c.ID)
	wantErr(t, "Conversation(erased user)", err, store.ErrNotFound)
	if ts, _ := s.ProviderTokens(ctx(), u.ID); len(ts) != 0 {
		t.Errorf("provider tokens survived erasure: %d", len(ts))
	}
	// The email is free again.
	again := newUser()
	again.Email = u.Email
	noErr(t, "CreateUser(erased email)", s.CreateUser(ctx(), again))
	// Recording an event without a user still works after erasure.
	noErr(t, "Record(erasure)", s.Record(ctx(), &store.AuditEvent{Event: "erasure"}))
}

func testTimestamps(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	// A time with sub-microsecond digits and a non-UTC zone.
	base := time.Date(2031, 7, 9, 23, 59, 58, 123456789, time.FixedZone("X", 5*3600+1800))
	sess := newSession(u, base, 36*time.Hour)
	noErr(t, "CreateSession", s.CreateSession(ctx(), u.ID, sess))
	got, err := s.ActiveSession(ctx(), sess.TokenHash, base.Add(time.Hour))
	noErr(t, "ActiveSession", err)
	want := base.Add(36 * time.Hour).Truncate(time.Microsecond)
	if !got.ExpiresAt.Equal(want) || got.ExpiresAt.Location() != time.UTC {
		t.Errorf("ExpiresAt = %v; want %v in UTC (microsecond precision)", got.ExpiresAt, want.UTC())
	}
	if !got.CreatedAt.Equal(base.Truncate(time.Microsecond)) {
		t.Errorf("CreatedAt = %v; want %v", got.CreatedAt, base.Truncate(time.Microsecond).UTC())
	}
}

// testHostileValues: SQL metacharacters, quotes, NULs and long strings are
// data, stored and returned byte for byte.
func testHostileValues(t *testing.T, s store.Store) {
	u := newUser()
	u.Email = `o'brien"; drop table users; --@example.test`
	u.PublicKey = "Robert'); DROP TABLE users;-- \\ % _ \u00e9 \U0001F510"
	noErr(t, "CreateUser(hostile)", s.CreateUser(ctx(), u))
	got, err := s.UserByEmail(ctx(), u.Email)
	noErr(t, "UserByEmail(hostile)", err)
	if got.PublicKey != u.PublicKey {
		t.Errorf("hostile value changed: %q", got.PublicKey)
	}
	_, err = s.UserByEmail(ctx(), "%")
	wantErr(t, "UserByEmail(%) is not a pattern", err, store.ErrNotFound)
	c := conversation(u)
	c.EncryptedTitle = string(bytes.Repeat([]byte("A"), 1<<20))
	noErr(t, "CreateConversation(1 MiB title)", s.CreateConversation(ctx(), u.ID, c))
	back, err := s.Conversation(ctx(), u.ID, c.ID)
	noErr(t, "Conversation", err)
	if len(back.EncryptedTitle) != 1<<20 {
		t.Errorf("1 MiB title came back as %d bytes", len(back.EncryptedTitle))
	}
	_, err = s.Conversation(ctx(), u.ID, "not-a-uuid' or '1'='1")
	if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Conversation(injection id): got %v; want ErrNotFound or ErrInvalid", err)
	}
}
