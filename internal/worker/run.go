package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"polydev/internal/crypto"
	"polydev/internal/provider"
)

// Deps are what a worker needs from its host: how to build a provider
// adapter, and the HTTP client that reaches the network through the user's
// egress (a proxy port in this process, the gateway socket in a container).
type Deps struct {
	NewProvider func(name string, cfg provider.Config) (provider.Provider, error)
	Client      *http.Client
	Now         func() time.Time // nil: time.Now
	// IdleTimeout ends a stream whose provider sends nothing for that long
	// (0: DefaultIdleTimeout); MaxDuration bounds a whole job (0:
	// DefaultMaxDuration). Either ends the answer incomplete, kind
	// "timeout".
	IdleTimeout, MaxDuration time.Duration
}

// Defaults for Deps.
const (
	DefaultIdleTimeout = 2 * time.Minute
	DefaultMaxDuration = 10 * time.Minute
)

// MaxModelLen bounds a grant's model name.
const MaxModelLen = 200

var errIdle = errors.New("the provider sent nothing for too long")
var errTooLong = errors.New("the answer took too long")

// MaxGrantLifetime bounds how far ahead a grant may expire: a grant is for
// one request, made just before it.
const MaxGrantLifetime = 15 * time.Minute

// RunWith executes one task: it opens the grant, decrypts the history,
// streams the provider's answer as encrypted chunks, and ends with exactly
// one Done event — even when the provider fails or ctx is cancelled, in
// which case the Result is marked Incomplete and carries what arrived.
// A task that cannot be used (a grant that does not open or does not match
// the job) also ends with a Done event, whose Error has kind "grant".
// RunWith returns an error only when emit fails.
func RunWith(ctx context.Context, task Task, deps Deps, emit func(Event) error) error {
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}
	start := now()
	job := task.Job
	res := &Result{MessageID: job.AssistantMessageID, EgressPort: job.Egress.Port, EgressIP: job.Egress.IP}
	finish := func(e *Error) error {
		res.Error = e
		res.DurationMS = now().Sub(start).Milliseconds()
		return emit(Event{Done: res})
	}

	grant, convKey, err := openGrant(task, now())
	if err != nil {
		return finish(&Error{Kind: "grant", Message: err.Error()})
	}
	defer convKey.Wipe()
	res.Model = grant.Model
	credential := provider.Credential{APIKey: grant.Credential}
	grant.Credential = ""

	messages, err := decryptHistory(job, convKey)
	if err != nil {
		return finish(&Error{Kind: "grant", Message: err.Error()})
	}
	defer func() {
		for i := range messages {
			messages[i].Content = ""
		}
	}()

	p, err := deps.NewProvider(job.Provider, provider.Config{BaseURL: task.BaseURL, HTTPClient: deps.Client})
	if err != nil {
		return finish(&Error{Kind: "internal", Message: err.Error()})
	}
	// One retry rule for every provider: only before the first chunk.
	p = provider.WithRetry(p, provider.DefaultRetryPolicy)
	idle, maxDur := deps.IdleTimeout, deps.MaxDuration
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if maxDur <= 0 {
		maxDur = DefaultMaxDuration
	}
	// The provider call runs under its own context, cancelled with a cause
	// when it idles or runs too long, so the answer still ends marked.
	callCtx, cancelCall := context.WithCancelCause(ctx)
	defer cancelCall(nil)
	overall := time.AfterFunc(maxDur, func() { cancelCall(errTooLong) })
	defer overall.Stop()
	watchdog := time.AfterFunc(idle, func() { cancelCall(errIdle) })
	defer watchdog.Stop()
	ctx = callCtx
	stream, err := p.Stream(ctx, credential, provider.Request{
		Model: grant.Model, Messages: messages, Temperature: grant.Temperature, MaxTokens: grant.MaxTokens,
	})
	if err != nil {
		return finish(failure(ctx, err))
	}
	defer stream.Close()

	// answer holds the plaintext so far; it is zeroed when the job ends.
	var answer []byte
	defer func() { clear(answer) }()
	var seq uint64
	for {
		c, err := stream.Next()
		watchdog.Reset(idle)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Broken off: store what arrived, marked incomplete.
			res.Incomplete = true
			if serr := sealAnswer(res, job, convKey, answer); serr != nil {
				return finish(&Error{Kind: "internal", Message: serr.Error()})
			}
			return finish(failure(ctx, err))
		}
		if c.Usage != nil {
			res.InputTokens, res.OutputTokens = c.Usage.InputTokens, c.Usage.OutputTokens
		}
		if c.FinishReason != "" {
			res.FinishReason = c.FinishReason
		}
		if c.Text == "" {
			continue
		}
		answer = append(answer, c.Text...)
		enc, err := crypto.Seal(convKey, crypto.ChunkContext(job.UserID, job.AssistantMessageID, seq, false), []byte(c.Text))
		if err != nil {
			return finish(&Error{Kind: "internal", Message: err.Error()})
		}
		if err := emit(Event{Chunk: &Chunk{Seq: seq, EncryptedChunk: enc}}); err != nil {
			return err
		}
		seq++
	}
	// The whole answer is sealed first, then the final chunk — empty, it
	// marks the stream complete (a reader that never sees it knows the
	// answer was cut) — so no client sees "complete" for an answer that
	// could not be stored.
	if err := sealAnswer(res, job, convKey, answer); err != nil {
		res.Incomplete = true
		return finish(&Error{Kind: "internal", Message: err.Error()})
	}
	enc, err := crypto.Seal(convKey, crypto.ChunkContext(job.UserID, job.AssistantMessageID, seq, true), nil)
	if err != nil {
		res.Incomplete = true
		return finish(&Error{Kind: "internal", Message: err.Error()})
	}
	if err := emit(Event{Chunk: &Chunk{Seq: seq, Final: true, EncryptedChunk: enc}}); err != nil {
		return err
	}
	return finish(nil)
}

func sealAnswer(res *Result, job Job, convKey crypto.Key, answer []byte) error {
	if len(answer) == 0 && res.Incomplete {
		return nil
	}
	enc, err := crypto.Seal(convKey, crypto.MessageContext(job.UserID, job.AssistantMessageID), answer)
	if err != nil {
		return err
	}
	res.EncryptedContent = enc
	return nil
}

// failure sorts err into the worker's error kinds. Provider messages are
// the provider's own words about the request, never the credential.
func failure(ctx context.Context, err error) *Error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errIdle) || errors.Is(cause, errTooLong) {
			return &Error{Kind: "timeout", Message: cause.Error()}
		}
		return &Error{Kind: "cancelled", Message: "request cancelled"}
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return &Error{Kind: pe.Kind.String(), Message: pe.Error(), RetryAfterMS: pe.RetryAfter.Milliseconds()}
	}
	return &Error{Kind: "upstream", Message: err.Error()}
}

// openGrant opens and checks the grant against the job it came with.
func openGrant(task Task, now time.Time) (*Grant, crypto.Key, error) {
	job := task.Job
	priv := task.Key
	if priv == nil {
		var err error
		if priv, err = crypto.ParsePrivateKeyRecord(task.RuntimeKey); err != nil {
			clear(task.RuntimeKey)
			return nil, crypto.Key{}, fmt.Errorf("runtime key: %w", err)
		}
		defer priv.Wipe()
	}
	clear(task.RuntimeKey)
	plain, err := crypto.OpenSealed(priv, crypto.GrantContext(job.UserID, job.RequestID), job.Grant)
	if err != nil {
		return nil, crypto.Key{}, fmt.Errorf("open grant: %s", crypto.Code(err))
	}
	defer clear(plain)
	var g Grant
	if err := json.Unmarshal(plain, &g); err != nil {
		return nil, crypto.Key{}, errors.New("grant is not valid JSON")
	}
	switch {
	case g.Version != 1:
		return nil, crypto.Key{}, fmt.Errorf("grant version %d is not supported", g.Version)
	case g.RequestID != job.RequestID, g.UserID != job.UserID, g.ConversationID != job.ConversationID,
		g.AssistantMessageID != job.AssistantMessageID, g.Provider != job.Provider:
		return nil, crypto.Key{}, errors.New("grant does not match the request")
	case len(job.History) == 0 || g.PromptMessageID != job.History[len(job.History)-1].ID ||
		job.History[len(job.History)-1].Role != provider.RoleUser:
		return nil, crypto.Key{}, errors.New("grant does not match the request: its prompt is not the request's last message")
	case g.Model == "" || len(g.Model) > MaxModelLen:
		return nil, crypto.Key{}, errors.New("grant names no model, or one too long")
	case g.Credential == "":
		return nil, crypto.Key{}, errors.New("grant carries no credential")
	case !now.Before(g.ExpiresAt):
		return nil, crypto.Key{}, errors.New("grant expired")
	case g.ExpiresAt.Sub(now) > MaxGrantLifetime:
		return nil, crypto.Key{}, errors.New("grant lifetime too long")
	}
	key, err := crypto.KeyFromText(g.ConversationKey)
	g.ConversationKey = ""
	if err != nil {
		return nil, crypto.Key{}, errors.New("grant conversation key is malformed")
	}
	return &g, key, nil
}

func decryptHistory(job Job, convKey crypto.Key) ([]provider.Message, error) {
	if len(job.History) == 0 {
		return nil, errors.New("no prompt")
	}
	out := make([]provider.Message, 0, len(job.History))
	for _, m := range job.History {
		pt, err := crypto.Open(convKey, crypto.MessageContext(job.UserID, m.ID), m.EncryptedContent)
		if err != nil {
			return nil, fmt.Errorf("message %s: %s", m.ID, crypto.Code(err))
		}
		role := m.Role
		if role != provider.RoleUser && role != provider.RoleAssistant && role != provider.RoleSystem {
			clear(pt)
			continue // tool turns are not sent to chat completions
		}
		out = append(out, provider.Message{Role: role, Content: string(pt)})
		clear(pt)
	}
	if len(out) == 0 || out[len(out)-1].Role != provider.RoleUser {
		return nil, errors.New("history does not end with a user prompt")
	}
	return out, nil
}
