package storetest

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"polydev/internal/store"
)

// The chat part of the suite: paging through conversations and messages,
// batches of messages, message status.

// conversationsAll pages through the acting user's conversations with the
// given limit and returns every row in the order seen, checking that no
// page is longer than asked and that only the last has no next cursor.
func conversationsAll(t *testing.T, s store.Store, as string, limit int) []store.Conversation {
	t.Helper()
	var all []store.Conversation
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("Conversations(limit %d): no end after 1000 pages", limit)
		}
		page, next, err := s.Conversations(ctx(), as, store.Page{Limit: limit, Cursor: cursor})
		noErr(t, fmt.Sprintf("Conversations(limit %d, page %d)", limit, pages), err)
		if want := cmp.Or(limit, store.DefaultPageLimit); len(page) > want {
			t.Fatalf("Conversations(limit %d): a page of %d rows", limit, len(page))
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		if len(page) == 0 {
			t.Fatalf("Conversations(limit %d): an empty page with a next cursor", limit)
		}
		cursor = next
	}
}

// messagesAll is conversationsAll for a conversation's messages.
func messagesAll(t *testing.T, s store.Store, as, conv string, limit int) []store.Message {
	t.Helper()
	var all []store.Message
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("Messages(limit %d): no end after 1000 pages", limit)
		}
		page, next, err := s.Messages(ctx(), as, conv, store.Page{Limit: limit, Cursor: cursor})
		noErr(t, fmt.Sprintf("Messages(limit %d, page %d)", limit, pages), err)
		if want := cmp.Or(limit, store.DefaultPageLimit); len(page) > want {
			t.Fatalf("Messages(limit %d): a page of %d rows", limit, len(page))
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		if len(page) == 0 {
			t.Fatalf("Messages(limit %d): an empty page with a next cursor", limit)
		}
		cursor = next
	}
}

func messageIDs(ms []store.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// newerFirst orders conversations as Conversations lists them: most
// recently updated first, ties by id descending.
func newerFirst(a, b store.Conversation) int {
	if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

func testConversationPages(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	const n = 57 // more than one default page
	var created []string
	for i := range n {
		for _, u := range []*store.User{a, b} {
			c := conversation(u)
			noErr(t, "CreateConversation", s.CreateConversation(ctx(), u.ID, c))
			if u == a {
				created = append(created, c.ID)
			}
			// Every fourth conversation of each user is updated to one
			// and the same time, by a message from the future: ties of
			// updated_at that only the id breaks.
			if i%4 == 0 {
				m := message(c, "user")
				m.CreatedAt = time.Date(2100, 1, 2, 3, 4, 5, 6000, time.UTC)
				noErr(t, "AddMessages", s.AddMessages(ctx(), u.ID, m))
			}
		}
	}

	whole := conversationsAll(t, s, a.ID, store.MaxPageLimit)
	if len(whole) != n {
		t.Fatalf("Conversations(a) listed %d rows; want %d", len(whole), n)
	}
	if !slices.IsSortedFunc(whole, newerFirst) {
		t.Errorf("Conversations(a) not in order (updated_at desc, id desc): %v", ids(whole))
	}
	if got, want := slices.Sorted(slices.Values(ids(whole))), slices.Sorted(slices.Values(created)); !slices.Equal(got, want) {
		t.Fatalf("Conversations(a) = %v; want exactly a's conversations %v", got, want)
	}
	for i := 1; i < len(whole); i++ {
		if whole[i].ID == whole[i-1].ID || newerFirst(whole[i-1], whole[i]) >= 0 {
			t.Errorf("Conversations(a): rows %d and %d are not strictly ordered", i-1, i)
		}
	}
	tied := 0
	for _, c := range whole {
		if c.UpdatedAt.Year() == 2100 {
			tied++
		}
	}
	if tied != (n+3)/4 {
		t.Errorf("%d conversations updated by a message from 2100; want %d (AddMessages bumps UpdatedAt to the newest message)", tied, (n+3)/4)
	}
	for _, limit := range []int{1, 2, 7, 0, n, n - 1} {
		if got := conversationsAll(t, s, a.ID, limit); !slices.Equal(ids(got), ids(whole)) {
			t.Errorf("Conversations(a) by pages of %d = %v; want %v", limit, ids(got), ids(whole))
		}
	}
	first, next, err := s.Conversations(ctx(), a.ID, store.Page{})
	noErr(t, "Conversations(default limit)", err)
	if len(first) != store.DefaultPageLimit || next == "" {
		t.Errorf("Conversations(limit 0) = %d rows, next %q; want %d and a cursor", len(first), next, store.DefaultPageLimit)
	}
	// Exactly n rows in a page of n: no next page.
	if page, next, err := s.Conversations(ctx(), a.ID, store.Page{Limit: n}); err != nil || len(page) != n || next != "" {
		t.Errorf("Conversations(limit %d) = %d rows, next %q, %v; want all of them and no cursor", n, len(page), next, err)
	}

	// Keyset, not offset: a conversation that goes to the front between
	// two pages shifts nothing on the next page.
	p1, next, err := s.Conversations(ctx(), a.ID, store.Page{Limit: 10})
	noErr(t, "Conversations(page 1)", err)
	front := mustConversation(t, s, a)
	newest := message(front, "user")
	newest.CreatedAt = time.Date(2101, 1, 1, 0, 0, 0, 0, time.UTC)
	noErr(t, "AddMessages", s.AddMessages(ctx(), a.ID, newest))
	if page, _, err := s.Conversations(ctx(), a.ID, store.Page{Limit: 1}); err != nil || len(page) != 1 || page[0].ID != front.ID {
		t.Errorf("Conversations(limit 1) after a newer message = %v, %v; want %s first", ids(page), err, front.ID)
	}
	p2, _, err := s.Conversations(ctx(), a.ID, store.Page{Limit: 10, Cursor: next})
	noErr(t, "Conversations(page 2)", err)
	if !slices.Equal(ids(slices.Concat(p1, p2)), ids(whole[:20])) {
		t.Errorf("pages around an insert = %v; want %v", ids(slices.Concat(p1, p2)), ids(whole[:20]))
	}

	// B's cursors, used by A, page through A's rows only.
	_, bNext, err := s.Conversations(ctx(), b.ID, store.Page{Limit: 5})
	noErr(t, "Conversations(b)", err)
	got, _, err := s.Conversations(ctx(), a.ID, store.Page{Limit: store.MaxPageLimit, Cursor: bNext})
	noErr(t, "Conversations(a, b's cursor)", err)
	for _, c := range got {
		if !slices.Contains(created, c.ID) {
			t.Errorf("A listing with B's cursor got %s, not one of A's conversations", c.ID)
		}
	}

	// Limits and cursors.
	for _, limit := range []int{-1, store.MaxPageLimit + 1} {
		_, _, err := s.Conversations(ctx(), a.ID, store.Page{Limit: limit})
		wantErr(t, fmt.Sprintf("Conversations(limit %d)", limit), err, store.ErrInvalid)
	}
	for _, cursor := range badCursors(next) {
		_, _, err := s.Conversations(ctx(), a.ID, store.Page{Cursor: cursor})
		wantErr(t, fmt.Sprintf("Conversations(cursor %q)", cursor), err, store.ErrInvalid)
	}
}

// badCursors are cursors no backend may accept, derived from a good one.
func badCursors(good string) []string {
	return []string{
		"garbage!",
		"not a cursor",
		"%%%",
		good + "=",
		good + "A",
		good[:len(good)-1],
		strings.ToUpper(good[:len(good)/2]) + "*" + good[len(good)/2+1:],
		base64.RawURLEncoding.EncodeToString([]byte("x")),
		base64.StdEncoding.EncodeToString(make([]byte, 64)),
		" " + good,
	}
}

func testMessagePages(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	c, other := conversation(a), conversation(a)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), a.ID, c))
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), a.ID, other))
	early := time.Date(2020, 5, 6, 7, 8, 9, 123456000, time.UTC)

	// inserted holds every message in the order AddMessages took them.
	var inserted []*store.Message
	add := func(batch ...*store.Message) {
		t.Helper()
		noErr(t, fmt.Sprintf("AddMessages(%d messages)", len(batch)), s.AddMessages(ctx(), a.ID, batch...))
		inserted = append(inserted, batch...)
	}
	batch := func(n int, at time.Time) []*store.Message {
		var ms []*store.Message
		for i := range n {
			m := message(c, []string{"user", "assistant", "tool", "system"}[i%4])
			m.CreatedAt = at
			ms = append(ms, m)
		}
		return ms
	}
	add(batch(5, time.Time{})...)  // the store's time, shared within the batch
	add(batch(4, early)...)        // explicit, earlier: listed before the first batch
	add(batch(63, time.Time{})...) // more than a default page in one batch
	add(batch(3, early)...)        // the same explicit time: after the earlier batch of it
	add(message(c, "user"))
	noErr(t, "AddMessages(other conversation)", s.AddMessages(ctx(), a.ID, message(other, "user")))
	noErr(t, "AddMessages(b)", s.AddMessages(ctx(), b.ID, message(mustConversation(t, s, b), "user")))

	for _, m := range inserted {
		if m.CreatedAt.IsZero() || m.CreatedAt.Location() != time.UTC || m.Status != store.MessageComplete {
			t.Fatalf("AddMessages left the record as %+v; want its stored time (UTC) and status", m)
		}
	}
	// The contract: by created_at, ties in insertion order.
	want := slices.Clone(inserted)
	slices.SortStableFunc(want, func(x, y *store.Message) int { return x.CreatedAt.Compare(y.CreatedAt) })
	var wantIDs []string
	for _, m := range want {
		wantIDs = append(wantIDs, m.ID)
	}
	whole := messagesAll(t, s, a.ID, c.ID, store.MaxPageLimit)
	if !slices.Equal(messageIDs(whole), wantIDs) {
		t.Fatalf("Messages = %v; want %v (created_at, then insertion order)", messageIDs(whole), wantIDs)
	}
	for i, m := range whole {
		if !m.CreatedAt.Equal(want[i].CreatedAt) || m.ConversationID != c.ID || m.Role != want[i].Role {
			t.Errorf("message %d came back as %+v; want %+v", i, m, *want[i])
		}
	}
	if !whole[0].CreatedAt.Equal(early) {
		t.Errorf("an explicit CreatedAt came back as %v; want %v", whole[0].CreatedAt, early)
	}
	for _, limit := range []int{1, 3, 4, 0, len(wantIDs) - 1, len(wantIDs)} {
		if got := messagesAll(t, s, a.ID, c.ID, limit); !slices.Equal(messageIDs(got), wantIDs) {
			t.Errorf("Messages by pages of %d = %v; want %v", limit, messageIDs(got), wantIDs)
		}
	}
	first, next, err := s.Messages(ctx(), a.ID, c.ID, store.Page{})
	noErr(t, "Messages(default limit)", err)
	if len(first) != store.DefaultPageLimit || next == "" {
		t.Errorf("Messages(limit 0) = %d rows, next %q; want %d and a cursor", len(first), next, store.DefaultPageLimit)
	}

	// Keyset: messages added after the first page are on the last pages,
	// and nothing is repeated.
	p1, next, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Limit: 10})
	noErr(t, "Messages(page 1)", err)
	late := batch(3, time.Time{})
	add(late...)
	rest, cursor := []store.Message(nil), next
	for cursor != "" {
		page, n, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Limit: 25, Cursor: cursor})
		noErr(t, "Messages(next page)", err)
		rest, cursor = append(rest, page...), n
	}
	if got := messageIDs(slices.Concat(p1, rest)); !slices.Equal(got, append(slices.Clone(wantIDs), late[0].ID, late[1].ID, late[2].ID)) {
		t.Errorf("pages around an insert = %v; want the old order then %v", got, messageIDs([]store.Message{*late[0], *late[1], *late[2]}))
	}

	// A cursor belongs to its list: not to another conversation, not to
	// the conversation list, and not to another user.
	_, _, err = s.Messages(ctx(), a.ID, other.ID, store.Page{Cursor: next})
	wantErr(t, "Messages(other conversation, this one's cursor)", err, store.ErrInvalid)
	_, convNext, err := s.Conversations(ctx(), a.ID, store.Page{Limit: 1})
	noErr(t, "Conversations", err)
	_, _, err = s.Messages(ctx(), a.ID, c.ID, store.Page{Cursor: convNext})
	wantErr(t, "Messages(a conversation cursor)", err, store.ErrInvalid)
	_, _, err = s.Conversations(ctx(), a.ID, store.Page{Cursor: next})
	wantErr(t, "Conversations(a message cursor)", err, store.ErrInvalid)
	_, _, err = s.Messages(ctx(), b.ID, c.ID, store.Page{Cursor: next})
	wantErr(t, "B lists A's messages with A's cursor", err, store.ErrNotFound)
	bConv := mustConversation(t, s, b)
	bm := message(bConv, "user")
	noErr(t, "AddMessages(b)", s.AddMessages(ctx(), b.ID, bm, message(bConv, "assistant")))
	_, bNext, err := s.Messages(ctx(), b.ID, bConv.ID, store.Page{Limit: 1})
	noErr(t, "Messages(b)", err)
	_, _, err = s.Messages(ctx(), a.ID, c.ID, store.Page{Cursor: bNext})
	wantErr(t, "A lists its messages with B's cursor", err, store.ErrInvalid)
	_, _, err = s.Messages(ctx(), a.ID, bConv.ID, store.Page{Cursor: bNext})
	wantErr(t, "A lists B's messages with B's cursor", err, store.ErrNotFound)

	for _, limit := range []int{-1, store.MaxPageLimit + 1} {
		_, _, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Limit: limit})
		wantErr(t, fmt.Sprintf("Messages(limit %d)", limit), err, store.ErrInvalid)
	}
	for _, cursor := range badCursors(next) {
		_, _, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Cursor: cursor})
		wantErr(t, fmt.Sprintf("Messages(cursor %q)", cursor), err, store.ErrInvalid)
	}
	if page, next, err := s.Messages(ctx(), a.ID, mustConversation(t, s, a).ID, store.Page{}); err != nil || len(page) != 0 || next != "" {
		t.Errorf("Messages(empty conversation) = %d, %q, %v; want nothing", len(page), next, err)
	}
}

func mustConversation(t *testing.T, s store.Store, u *store.User) *store.Conversation {
	t.Helper()
	c := conversation(u)
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), u.ID, c))
	return c
}

func testMessageStatus(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	c := mustConversation(t, s, u)
	plain, broken := message(c, "user"), message(c, "assistant")
	broken.Status = store.MessageIncomplete
	noErr(t, "AddMessages", s.AddMessages(ctx(), u.ID, plain, broken))
	if plain.Status != store.MessageComplete {
		t.Errorf("an empty Status was stored as %q; want %q", plain.Status, store.MessageComplete)
	}
	ms, _, err := s.Messages(ctx(), u.ID, c.ID, store.Page{})
	noErr(t, "Messages", err)
	if len(ms) != 2 || ms[0].Status != store.MessageComplete || ms[1].Status != store.MessageIncomplete {
		t.Errorf("statuses came back as %+v; want complete, incomplete", ms)
	}
	bad := message(c, "assistant")
	bad.Status = "partial"
	wantErr(t, "AddMessages(unknown status)", s.AddMessages(ctx(), u.ID, bad), store.ErrInvalid)
}

func testAddMessagesAtomic(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	c, c2 := mustConversation(t, s, a), mustConversation(t, s, a)
	existing := message(c, "user")
	noErr(t, "AddMessages", s.AddMessages(ctx(), a.ID, existing))
	before, err := s.Conversation(ctx(), a.ID, c.ID)
	noErr(t, "Conversation", err)
	bConv := mustConversation(t, s, b)

	badRole := message(c, "narrator")
	badStatus := message(c, "assistant")
	badStatus.Status = "stopped"
	badID := message(c, "assistant")
	badID.ID = "not-a-uuid"
	dup := message(c, "assistant")
	dup.ID = existing.ID
	theirs := message(bConv, "user")
	for _, tc := range []struct {
		what  string
		batch []*store.Message
		want  error
	}{
		{"a bad role last", []*store.Message{message(c, "user"), message(c, "assistant"), badRole}, store.ErrInvalid},
		{"a bad status in the middle", []*store.Message{message(c, "user"), badStatus, message(c, "assistant")}, store.ErrInvalid},
		{"an id that is not a UUID", []*store.Message{message(c, "user"), badID}, store.ErrInvalid},
		{"a taken id", []*store.Message{message(c, "user"), dup}, store.ErrConflict},
		{"a duplicate id within the batch", func() []*store.Message {
			m := message(c, "user")
			twin := message(c, "assistant")
			twin.ID = m.ID
			return []*store.Message{m, twin}
		}(), store.ErrConflict},
		{"two conversations", []*store.Message{message(c, "user"), message(c2, "assistant")}, store.ErrInvalid},
		{"another user's conversation second", []*store.Message{message(c, "user"), theirs}, store.ErrInvalid},
		{"another user's conversation", []*store.Message{message(bConv, "user"), message(bConv, "assistant")}, store.ErrNotFound},
		{"a nil message", []*store.Message{message(c, "user"), nil}, store.ErrInvalid},
		{"no messages", nil, store.ErrInvalid},
	} {
		wantErr(t, "AddMessages("+tc.what+")", s.AddMessages(ctx(), a.ID, tc.batch...), tc.want)
	}
	for _, conv := range []*store.Conversation{c, c2} {
		ms, _, err := s.Messages(ctx(), a.ID, conv.ID, store.Page{})
		noErr(t, "Messages", err)
		if conv == c && (len(ms) != 1 || ms[0].ID != existing.ID) || conv == c2 && len(ms) != 0 {
			t.Errorf("after failed batches, conversation holds %v; want only what was there", messageIDs(ms))
		}
	}
	after, err := s.Conversation(ctx(), a.ID, c.ID)
	noErr(t, "Conversation", err)
	if !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("failed batches moved UpdatedAt from %v to %v", before.UpdatedAt, after.UpdatedAt)
	}
	if ms, _, err := s.Messages(ctx(), b.ID, bConv.ID, store.Page{}); err != nil || len(ms) != 0 {
		t.Errorf("B's conversation after A's batches: %v, %v; want empty", messageIDs(ms), err)
	}

	// A good batch lands whole, in order, and bumps UpdatedAt.
	good := []*store.Message{message(c, "user"), message(c, "assistant"), message(c, "user")}
	noErr(t, "AddMessages(good batch)", s.AddMessages(ctx(), a.ID, good...))
	ms, _, err := s.Messages(ctx(), a.ID, c.ID, store.Page{})
	noErr(t, "Messages", err)
	if got := messageIDs(ms); !slices.Equal(got, []string{existing.ID, good[0].ID, good[1].ID, good[2].ID}) {
		t.Errorf("after a good batch: %v", got)
	}
	bumped, err := s.Conversation(ctx(), a.ID, c.ID)
	noErr(t, "Conversation", err)
	if bumped.UpdatedAt.Before(before.UpdatedAt) || bumped.UpdatedAt.Before(good[2].CreatedAt) {
		t.Errorf("UpdatedAt after a batch = %v; want at least %v and the batch's time %v", bumped.UpdatedAt, before.UpdatedAt, good[2].CreatedAt)
	}
}

func testFinishMessage(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	c := mustConversation(t, s, a)
	prompt := message(c, "user")
	placeholder := &store.Message{ID: NewID(), ConversationID: c.ID, Role: "assistant", Status: store.MessageIncomplete}
	noErr(t, "AddMessages", s.AddMessages(ctx(), a.ID, prompt, placeholder))

	// Another user cannot finish it; a user message, a complete answer and
	// an unknown id cannot be finished.
	done := &store.Message{ID: placeholder.ID, ConversationID: c.ID, EncryptedContent: "AQ-answer", TokensUsed: 7,
		Model: "m", EgressIP: "203.0.113.5", EgressPort: 10002, DurationMS: 99}
	wantErr(t, "FinishMessage(another user)", s.FinishMessage(ctx(), b.ID, done), store.ErrNotFound)
	wantErr(t, "FinishMessage(a prompt)", s.FinishMessage(ctx(), a.ID, &store.Message{ID: prompt.ID, ConversationID: c.ID}), store.ErrNotFound)
	wantErr(t, "FinishMessage(unknown)", s.FinishMessage(ctx(), a.ID, &store.Message{ID: NewID(), ConversationID: c.ID}), store.ErrNotFound)
	wantErr(t, "FinishMessage(bad status)", s.FinishMessage(ctx(), a.ID, &store.Message{ID: placeholder.ID, ConversationID: c.ID, Status: "gone"}), store.ErrInvalid)

	noErr(t, "FinishMessage", s.FinishMessage(ctx(), a.ID, done))
	if done.Status != store.MessageComplete {
		t.Errorf("finished status %q; want complete", done.Status)
	}
	ms, _, err := s.Messages(ctx(), a.ID, c.ID, store.Page{})
	noErr(t, "Messages", err)
	if len(ms) != 2 {
		t.Fatalf("%d messages; want 2", len(ms))
	}
	got := ms[1]
	if got.ID != placeholder.ID || got.EncryptedContent != "AQ-answer" || got.TokensUsed != 7 || got.Model != "m" ||
		got.EgressIP != "203.0.113.5" || got.EgressPort != 10002 || got.DurationMS != 99 || got.Status != store.MessageComplete ||
		!got.CreatedAt.Equal(placeholder.CreatedAt) {
		t.Errorf("finished message %+v", got)
	}
	// Once finished it stays as it is.
	wantErr(t, "FinishMessage(again)", s.FinishMessage(ctx(), a.ID, &store.Message{ID: placeholder.ID, ConversationID: c.ID, EncryptedContent: "AQ-other"}), store.ErrNotFound)
}

// testChatTurn: ChatTurn returns what Conversation, ProviderToken and the
// first page of Messages return, and nothing of another user's.
func testChatTurn(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	c := conversation(a)
	c.Provider = "anthropic"
	noErr(t, "CreateConversation", s.CreateConversation(ctx(), a.ID, c))
	r := store.PortRange{Base: 30001, Size: 1000}

	// Not linked yet, no messages.
	turn, err := s.ChatTurn(ctx(), a.ID, c.ID)
	noErr(t, "ChatTurn(empty)", err)
	if turn.Token != nil || len(turn.Messages) != 0 || turn.Next != "" {
		t.Fatalf("ChatTurn of a new conversation: token %+v, %d messages, next %q; want none", turn.Token, len(turn.Messages), turn.Next)
	}
	// The token of the conversation's provider, not another one's.
	link(t, s, a, "openai", r)
	if turn, err = s.ChatTurn(ctx(), a.ID, c.ID); err != nil || turn.Token != nil {
		t.Fatalf("ChatTurn with only another provider linked: %+v, %v; want no token", turn, err)
	}
	link(t, s, a, "anthropic", r)
	link(t, s, b, "anthropic", r)
	var added []*store.Message
	for i := range store.MaxPageLimit + 3 {
		m := message(c, []string{"user", "assistant"}[i%2])
		added = append(added, m)
	}
	noErr(t, "AddMessages", s.AddMessages(ctx(), a.ID, added...))

	turn, err = s.ChatTurn(ctx(), a.ID, c.ID)
	noErr(t, "ChatTurn", err)
	conv, err := s.Conversation(ctx(), a.ID, c.ID)
	noErr(t, "Conversation", err)
	if turn.Conversation != *conv {
		t.Errorf("ChatTurn conversation %+v; Conversation returns %+v", turn.Conversation, *conv)
	}
	tok, err := s.ProviderToken(ctx(), a.ID, "anthropic")
	noErr(t, "ProviderToken", err)
	if turn.Token == nil || !reflect.DeepEqual(*turn.Token, *tok) {
		t.Errorf("ChatTurn token %+v; ProviderToken returns %+v", turn.Token, tok)
	}
	page, next, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Limit: store.MaxPageLimit})
	noErr(t, "Messages", err)
	if !reflect.DeepEqual(turn.Messages, page) || turn.Next != next || next == "" {
		t.Errorf("ChatTurn: %d messages, next %q; Messages returns %d, next %q", len(turn.Messages), turn.Next, len(page), next)
	}
	// The cursor leads to the rest.
	rest, last, err := s.Messages(ctx(), a.ID, c.ID, store.Page{Limit: store.MaxPageLimit, Cursor: turn.Next})
	noErr(t, "Messages(after ChatTurn)", err)
	if len(rest) != 3 || last != "" || rest[2].ID != added[len(added)-1].ID {
		t.Errorf("after ChatTurn's cursor: %d messages, next %q; want the last 3", len(rest), last)
	}

	// Another user's conversation, or none, is not found.
	_, err = s.ChatTurn(ctx(), b.ID, c.ID)
	wantErr(t, "ChatTurn(another user's conversation)", err, store.ErrNotFound)
	_, err = s.ChatTurn(ctx(), a.ID, NewID())
	wantErr(t, "ChatTurn(unknown conversation)", err, store.ErrNotFound)
	_, err = s.ChatTurn(ctx(), a.ID, "not-a-uuid")
	wantErr(t, "ChatTurn(malformed id)", err, store.ErrNotFound)
}
