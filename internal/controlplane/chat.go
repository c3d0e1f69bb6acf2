package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/crypto"
	"polydev/internal/runtime"
	"polydev/internal/store"
	"polydev/internal/worker"
)

// Chat. The control plane stores what the client encrypted, relays the
// grant it cannot open to the runtime, and relays the encrypted chunks the
// runtime streams back. It never holds a conversation key.

// Size caps of what a client may send, in bytes of ciphertext.
const (
	maxPrompt = 512 << 10
	maxGrant  = 64 << 10
	maxTitle  = 4 << 10
)

// streamLimiter caps concurrent chat streams per user.
type streamLimiter struct {
	mu     sync.Mutex
	max    int
	active map[string]int
}

func (l *streamLimiter) acquire(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[user] >= l.max {
		return false
	}
	l.active[user]++
	return true
}

func (l *streamLimiter) release(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[user]--; l.active[user] <= 0 {
		delete(l.active, user)
	}
}

func (s *Server) runtimeKey(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.RuntimeKeys == nil {
		return errorf(http.StatusServiceUnavailable, "runtime_unavailable", "no runtime is configured")
	}
	k, err := s.cfg.RuntimeKeys.CurrentKey(r.Context())
	if err != nil {
		return &apiError{status: http.StatusServiceUnavailable, code: "runtime_unavailable", message: "the runtime is not reachable", cause: err}
	}
	writeJSON(w, http.StatusOK, api.RuntimeKey{KeyID: k.ID, PublicKey: k.PublicKey, CreatedAt: k.CreatedAt,
		ExpiresAt: k.ExpiresAt, Identity: k.Identity, Signature: k.Signature})
	return nil
}

func knownProvider(p string) bool {
	for _, q := range store.Providers {
		if p == q {
			return true
		}
	}
	return false
}

func (s *Server) providerToken(ctx context.Context, user, provider string) (*store.ProviderToken, error) {
	t, err := s.store.ProviderToken(ctx, user, provider)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusConflict, "provider_not_linked", "link %s first (polydev link key --provider %s)", provider, provider)
	}
	if err != nil {
		return nil, storeError(err)
	}
	return t, nil
}

// sealedToken returns the caller's own sealed credential for a provider;
// only their device can open it.
func (s *Server) sealedToken(w http.ResponseWriter, r *http.Request) error {
	p := r.PathValue("provider")
	if !knownProvider(p) {
		return errorf(http.StatusNotFound, "unknown_provider", "unknown provider %q", p)
	}
	t, err := s.providerToken(r.Context(), session(r).UserID, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ProviderTokenResponse{Provider: p, EncryptedToken: t.EncryptedRefreshToken})
	return nil
}

func conversationJSON(c *store.Conversation) api.Conversation {
	return api.Conversation{ConversationID: c.ID, Provider: c.Provider, WrappedKey: c.WrappedKey,
		EncryptedTitle: c.EncryptedTitle, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

func validUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

func (s *Server) createConversation(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateConversationRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case !validUUID(req.ConversationID):
		return badRequest("conversation_id must be a lowercase UUID")
	case !knownProvider(req.Provider):
		return badRequest("provider must be one of openai, anthropic, google")
	}
	if err := crypto.CheckEnvelopeText(req.WrappedKey, maxWrappedKey); err != nil {
		return badRequest("wrapped_key is not a wrapped key (%s)", crypto.Code(err))
	}
	if req.EncryptedTitle != "" {
		if err := crypto.CheckEnvelopeText(req.EncryptedTitle, maxTitle); err != nil {
			return badRequest("encrypted_title is not an envelope of at most %d bytes (%s)", maxTitle, crypto.Code(err))
		}
	}
	c := &store.Conversation{ID: req.ConversationID, UserID: session(r).UserID, Provider: req.Provider,
		WrappedKey: req.WrappedKey, EncryptedTitle: req.EncryptedTitle}
	if err := s.store.CreateConversation(r.Context(), c.UserID, c); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, "conflict", "a conversation with this id exists")
		}
		return storeError(err)
	}
	writeJSON(w, http.StatusCreated, api.CreateConversationResponse{ConversationID: c.ID})
	return nil
}

func page(r *http.Request) (store.Page, error) {
	p := store.Page{Cursor: r.URL.Query().Get("cursor")}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > store.MaxPageLimit {
			return p, badRequest("limit must be 1 to %d", store.MaxPageLimit)
		}
		p.Limit = n
	}
	return p, nil
}

func pageError(err error) error {
	if errors.Is(err, store.ErrInvalid) {
		return badRequest("invalid cursor")
	}
	return storeError(err)
}

func (s *Server) listConversations(w http.ResponseWriter, r *http.Request) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	cs, next, err := s.store.Conversations(r.Context(), session(r).UserID, p)
	if err != nil {
		return pageError(err)
	}
	out := api.ConversationList{Sessions: make([]api.Conversation, 0, len(cs)), NextCursor: next}
	for i := range cs {
		out.Sessions = append(out.Sessions, conversationJSON(&cs[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) conversation(w http.ResponseWriter, r *http.Request) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	user, id := session(r).UserID, r.PathValue("id")
	c, err := s.store.Conversation(r.Context(), user, id)
	if err != nil {
		return storeError(err)
	}
	ms, next, err := s.store.Messages(r.Context(), user, id, p)
	if err != nil {
		return pageError(err)
	}
	out := api.ConversationDetail{Conversation: conversationJSON(c), Messages: make([]api.Message, 0, len(ms)), NextCursor: next}
	for _, m := range ms {
		status := m.Status
		if status == "" {
			status = store.MessageComplete
		}
		out.Messages = append(out.Messages, api.Message{ID: m.ID, Role: m.Role, EncryptedContent: m.EncryptedContent,
			Status: status, Model: m.Model, TokensUsed: m.TokensUsed, DurationMS: m.DurationMS,
			EgressPort: m.EgressPort, EgressIP: m.EgressIP, CreatedAt: m.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteConversation(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.DeleteConversation(r.Context(), session(r).UserID, r.PathValue("id")); err != nil {
		return storeError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// history loads every message of a conversation, oldest first.
// history is the conversation's whole history for the worker, from its
// first page ms (with the next page's cursor) on.
func (s *Server) history(ctx context.Context, user, conv string, ms []store.Message, next string) ([]worker.Message, error) {
	out := make([]worker.Message, 0, len(ms)+1)
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		for _, m := range ms {
			if m.EncryptedContent == "" {
				continue // an answer cut off before its first byte holds nothing to send
			}
			out = append(out, worker.Message{ID: m.ID, Role: m.Role, EncryptedContent: m.EncryptedContent})
		}
		if next == "" {
			return out, nil
		}
		p.Cursor = next
		var err error
		if ms, next, err = s.store.Messages(ctx, user, conv, p); err != nil {
			return nil, err
		}
	}
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) error {
	var req api.SendMessageRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case !validUUID(req.RequestID), !validUUID(req.PromptMessageID), !validUUID(req.AssistantMessageID):
		return badRequest("request_id, prompt_message_id and assistant_message_id must be lowercase UUIDs")
	case req.PromptMessageID == req.AssistantMessageID:
		return badRequest("the prompt and the answer need different ids")
	case req.KeyID == "" || len(req.KeyID) > 128:
		return badRequest("key_id is required")
	case len(req.Model) > 200:
		return badRequest("model name too long")
	}
	if err := crypto.CheckEnvelopeText(req.EncryptedPrompt, maxPrompt); err != nil {
		return badRequest("encrypted_prompt is not an envelope of at most %d bytes (%s)", maxPrompt, crypto.Code(err))
	}
	if err := crypto.CheckSealedText(req.Grant, maxGrant); err != nil {
		return badRequest("grant is not a sealed envelope of at most %d bytes (%s)", maxGrant, crypto.Code(err))
	}
	if s.cfg.Runtime == nil {
		return errorf(http.StatusServiceUnavailable, "runtime_unavailable", "no runtime is configured")
	}
	user, convID := session(r).UserID, r.PathValue("id")
	ctx := r.Context()
	if !s.streams.acquire(user) {
		return &apiError{status: http.StatusTooManyRequests, code: "too_many_streams",
			message: fmt.Sprintf("at most %d chats may stream at once", s.streams.max), retryAfter: time.Second}
	}
	// The stream slot and the conversation are given back once the turn is
	// stored, before the final event: a client that sends its next prompt
	// as soon as it reads "done" finds both free.
	releaseStream := sync.OnceFunc(func() { s.streams.release(user) })
	defer releaseStream()
	// One answer at a time per conversation: two overlapping sends would
	// interleave their turns in the history.
	if !s.busyConvs.acquire(user + "/" + convID) {
		return &apiError{status: http.StatusConflict, code: "conversation_busy",
			message: "this conversation is already answering; wait for it to finish", retryAfter: time.Second}
	}
	releaseConv := sync.OnceFunc(func() { s.busyConvs.release(user + "/" + convID) })
	defer releaseConv()
	// The conversation, the linked credential and the history sit before
	// the first byte: one read (one round trip on PostgreSQL), and more
	// only for a history longer than a page.
	turn, err := s.store.ChatTurn(ctx, user, convID)
	if err != nil {
		return storeError(err)
	}
	conv, token := &turn.Conversation, turn.Token
	hist, err := s.history(ctx, user, convID, turn.Messages, turn.Next)
	if err != nil {
		return storeError(err)
	}
	if token == nil {
		return errorf(http.StatusConflict, "provider_not_linked", "link %s first (polydev link key --provider %s)", conv.Provider, conv.Provider)
	}
	for _, m := range hist {
		if m.ID == req.PromptMessageID || m.ID == req.AssistantMessageID {
			return errorf(http.StatusConflict, "conflict", "a message with this id exists")
		}
	}

	start := s.now()
	job := worker.Job{
		RequestID: req.RequestID, UserID: user, ConversationID: convID, Provider: conv.Provider,
		Grant: req.Grant, KeyID: req.KeyID,
		History:            append(hist, worker.Message{ID: req.PromptMessageID, Role: store.MessageRoleUser, EncryptedContent: req.EncryptedPrompt}),
		AssistantMessageID: req.AssistantMessageID,
		Egress:             worker.Egress{Port: token.EgressPort, IP: token.EgressIP},
	}
	sse := &sseWriter{w: w, rc: http.NewResponseController(w)}
	// The job runs under its own context: a client that goes away cancels
	// the upstream call, but the worker still reports what arrived so it
	// can be stored.
	jobCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	// A quick failure gets a plain error answer; a slow start opens the
	// stream after one heartbeat interval, so keep-alives flow while the
	// provider thinks.
	early := time.AfterFunc(s.cfg.Heartbeat, func() { sse.startEarly(s.cfg.Heartbeat) })
	rec := &answerRecord{s: s, user: user, conv: convID, req: req, start: start}
	var result *worker.Result
	runErr := s.cfg.Runtime.Run(jobCtx, job, func(ev worker.Event) error {
		switch {
		case ev.Chunk != nil:
			if err := sse.start(s.cfg.Heartbeat); err != nil {
				cancel()
			} else if err := sse.chunk(api.StreamChunk{EncryptedChunk: ev.Chunk.EncryptedChunk, Seq: ev.Chunk.Seq, Final: ev.Chunk.Final}); err != nil {
				cancel() // the client is gone: stop the provider, keep the result
			}
			// After the first chunk is on its way, keep the prompt and a
			// placeholder answer, so even a crash leaves a marked turn.
			rec.begin(context.WithoutCancel(ctx))
		case ev.Done != nil:
			result = ev.Done
		}
		return nil
	})
	early.Stop()
	started := sse.settle()
	sse.stopHeartbeat()
	if runErr == nil && result == nil {
		runErr = errors.New("the runtime ended without a result")
	}
	if runErr != nil && result == nil {
		ae := runtimeError(runErr).(*apiError)
		if !started && !rec.begun {
			return ae // nothing streamed: a plain error answer (handle logs it)
		}
		// Whatever streamed stays marked incomplete.
		s.log.Error("runtime failed mid-stream", "err", runErr)
		result = &worker.Result{Incomplete: true,
			Error: &worker.Error{Kind: ae.code, Message: ae.message, RetryAfterMS: ae.retryAfter.Milliseconds()}}
	}
	stored, err := rec.finish(context.WithoutCancel(ctx), result)
	if err != nil {
		s.log.Error("chat result not stored", "err", err)
	}
	if (result.Error == nil || result.Error.Kind != "grant") && !token.LastUsedAt.After(s.now().Add(-time.Minute)) {
		// The credential went to the provider: record its use, once a
		// minute at most (a write less for most turns).
		if terr := s.store.TouchProviderToken(context.WithoutCancel(ctx), user, conv.Provider, s.now()); terr != nil {
			s.log.Warn("provider token use not recorded", "err", terr)
		}
	}
	releaseConv()
	releaseStream()
	if !started {
		if result.Error != nil && !stored {
			// Nothing streamed, nothing stored: a plain error response, so
			// the client can retry the same prompt.
			return workerError(result.Error)
		}
		if err := sse.start(0); err != nil {
			return nil
		}
	}
	usage := api.Usage{InputTokens: result.InputTokens, OutputTokens: result.OutputTokens}
	if result.Error != nil || err != nil {
		e := api.StreamError{Stored: stored, Incomplete: result.Incomplete || result.Error != nil, Usage: usage, DurationMS: result.DurationMS}
		if stored {
			e.PromptMessageID, e.AssistantMessageID = req.PromptMessageID, req.AssistantMessageID
		}
		if result.Error != nil {
			ae := workerError(result.Error).(*apiError)
			e.Error = api.ErrorDetail{Code: ae.code, Message: ae.message}
			e.RetryAfterMS = result.Error.RetryAfterMS
		} else {
			e.Error = api.ErrorDetail{Code: "internal", Message: "the answer could not be stored"}
		}
		sse.event("error", e)
		return nil
	}
	sse.event("done", api.StreamDone{PromptMessageID: req.PromptMessageID, AssistantMessageID: req.AssistantMessageID,
		Model: result.Model, Usage: usage, FinishReason: result.FinishReason, DurationMS: result.DurationMS, EgressPort: result.EgressPort})
	return nil
}

// answerRecord stores one turn. When the first chunk streams it keeps the
// prompt and an empty assistant placeholder marked incomplete (begin);
// when the job ends it fills the placeholder in (finish). A server killed
// mid-stream therefore leaves the prompt and a marked answer. A failure
// before any chunk stores nothing, so the client can simply retry.
type answerRecord struct {
	s     *Server
	user  string
	conv  string
	req   api.SendMessageRequest
	start time.Time
	begun bool
	err   error
}

func (a *answerRecord) begin(ctx context.Context) {
	if a.begun || a.err != nil {
		return
	}
	prompt := &store.Message{ID: a.req.PromptMessageID, ConversationID: a.conv, Role: store.MessageRoleUser,
		EncryptedContent: a.req.EncryptedPrompt, CreatedAt: a.start}
	answer := &store.Message{ID: a.req.AssistantMessageID, ConversationID: a.conv, Role: store.MessageRoleAssistant,
		Status: store.MessageIncomplete, CreatedAt: a.start.Add(time.Microsecond)}
	if a.err = a.s.store.AddMessages(ctx, a.user, prompt, answer); a.err == nil {
		a.begun = true
	}
}

func (a *answerRecord) finish(ctx context.Context, res *worker.Result) (bool, error) {
	if res.EncryptedContent != "" {
		if err := crypto.CheckEnvelopeText(res.EncryptedContent, 16<<20); err != nil {
			res.EncryptedContent = ""
			res.Incomplete = true
			a.s.log.Error("runtime returned a malformed answer", "err", err)
		}
	}
	status := store.MessageComplete
	if res.Incomplete || res.Error != nil || res.EncryptedContent == "" {
		status = store.MessageIncomplete
	}
	answer := &store.Message{ID: a.req.AssistantMessageID, ConversationID: a.conv, Role: store.MessageRoleAssistant,
		EncryptedContent: res.EncryptedContent, TokensUsed: res.InputTokens + res.OutputTokens, Model: res.Model,
		EgressIP: res.EgressIP, EgressPort: res.EgressPort, DurationMS: res.DurationMS, Status: status}
	if a.begun {
		if err := a.s.store.FinishMessage(ctx, a.user, answer); err != nil {
			return true, err // the placeholder stays, marked incomplete
		}
		return true, nil
	}
	if res.EncryptedContent == "" {
		return false, a.err
	}
	prompt := &store.Message{ID: a.req.PromptMessageID, ConversationID: a.conv, Role: store.MessageRoleUser,
		EncryptedContent: a.req.EncryptedPrompt, CreatedAt: a.start}
	answer.CreatedAt = a.start.Add(time.Microsecond)
	if err := a.s.store.AddMessages(ctx, a.user, prompt, answer); err != nil {
		return false, err
	}
	return true, nil
}

// busySet holds keys in use (conversations answering).
type busySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (b *busySet) acquire(k string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys[k] {
		return false
	}
	b.keys[k] = true
	return true
}

func (b *busySet) release(k string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.keys, k)
}

// runtimeError maps a runtime failure; every branch returns an *apiError.
func runtimeError(err error) error {
	var busy *runtime.BusyError
	switch {
	case errors.As(err, &busy):
		return &apiError{status: http.StatusServiceUnavailable, code: "runtime_busy", message: "every runtime worker is busy; retry shortly",
			retryAfter: busy.RetryAfter, cause: err}
	case errors.Is(err, runtime.ErrUnknownKey):
		return &apiError{status: http.StatusConflict, code: "runtime_key_expired", message: "the runtime key expired; fetch it again and reseal the grant", cause: err}
	case errors.Is(err, runtime.ErrReplay):
		return &apiError{status: http.StatusConflict, code: "request_replayed", message: "this request id was already used", cause: err}
	case errors.Is(err, context.Canceled):
		return &apiError{status: 499, code: "cancelled", message: "request cancelled", cause: err}
	default:
		return &apiError{status: http.StatusBadGateway, code: "runtime_failure", message: "the runtime failed", cause: err}
	}
}

// workerError maps a worker's failure before anything streamed to a status.
func workerError(e *worker.Error) error {
	ae := &apiError{code: e.Kind, message: e.Message, retryAfter: time.Duration(e.RetryAfterMS) * time.Millisecond}
	switch e.Kind {
	case "grant", "bad_request":
		ae.status = http.StatusBadRequest
	case "auth":
		ae.status = http.StatusUnauthorized
		ae.code = "provider_auth"
		ae.message = "the provider refused the linked credential; link it again"
	case "rate_limited":
		ae.status = http.StatusTooManyRequests
	case "overloaded":
		ae.status = http.StatusServiceUnavailable
	case "cancelled":
		ae.status = 499
	case "timeout":
		ae.status = http.StatusGatewayTimeout
		ae.message = "the provider stopped answering"
	case "runtime_busy", "overloaded_runtime":
		ae.status = http.StatusServiceUnavailable
	case "runtime_key_expired", "request_replayed":
		ae.status = http.StatusConflict
	default:
		ae.status = http.StatusBadGateway
	}
	return ae
}

// sseWriter writes a text/event-stream; a heartbeat comment keeps idle
// connections (and proxies between) open while the model thinks.
type sseWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	settled bool // the job is over: no late start from the heartbeat timer
	failed  error
	stop    chan struct{}
	done    chan struct{}
}

// startEarly opens the stream from the heartbeat timer, unless the job is
// already over; it reports whether the stream is open.
func (s *sseWriter) startEarly(heartbeat time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settled || s.started {
		return false
	}
	if s.startLocked(heartbeat) != nil {
		return false
	}
	if _, err := s.w.Write([]byte(": keep-alive\n\n")); err != nil {
		s.failed = err
		return false
	}
	s.failed = s.rc.Flush()
	return s.failed == nil
}

// settle marks the job over and reports whether the stream was opened.
func (s *sseWriter) settle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled = true
	return s.started
}

func (s *sseWriter) start(heartbeat time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(heartbeat)
}

func (s *sseWriter) startLocked(heartbeat time.Duration) error {
	if s.started {
		return s.failed
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	s.failed = s.rc.Flush()
	if heartbeat > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.beat(heartbeat, s.stop, s.done)
	}
	return s.failed
}

func (s *sseWriter) beat(every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.write([]byte(": keep-alive\n\n"))
		}
	}
}

func (s *sseWriter) stopHeartbeat() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (s *sseWriter) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if _, err := s.w.Write(b); err != nil {
		s.failed = err
		return err
	}
	s.failed = s.rc.Flush()
	return s.failed
}

// chunk writes one data event: the per-token path, encoded without
// reflection.
func (s *sseWriter) chunk(c api.StreamChunk) error {
	msg := make([]byte, 0, len(c.EncryptedChunk)+64)
	msg = append(msg, "data: "...)
	msg = c.AppendJSON(msg)
	msg = append(msg, "\n\n"...)
	return s.write(msg)
}

func (s *sseWriter) event(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var msg []byte
	if name != "" {
		msg = append(msg, "event: "+name+"\n"...)
	}
	msg = append(msg, "data: "...)
	msg = append(msg, b...)
	msg = append(msg, "\n\n"...)
	return s.write(msg)
}
