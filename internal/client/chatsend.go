package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/buildinfo"
	"polydev/internal/crypto"
	"polydev/internal/worker"
)

// Sending a prompt and reading the answer stream.

// Errors of a send that a caller branches on.
var (
	// ErrStreamBroken: the answer stream broke its contract — a chunk out
	// of order or after the final one, a done event without the final
	// chunk, a malformed event, or a stream that ended with neither done
	// nor error. What was shown may be incomplete.
	ErrStreamBroken = errors.New("the answer stream is broken")
	// ErrChunkTampered: a chunk of the answer does not open under the
	// conversation key at its place: it was damaged or tampered with.
	ErrChunkTampered = errors.New("a chunk of the answer does not decrypt")
	// ErrStreamIdle: nothing, not even a keep-alive, arrived for too long
	// (Chat.StreamIdle once the stream began).
	ErrStreamIdle = errors.New("the server stopped sending (not even a keep-alive arrived in time)")
)

// AnswerError is the stream's error event: the provider or the runtime
// failed. Stored tells whether the prompt and the part of the answer that
// arrived were kept (the answer marked incomplete).
type AnswerError struct {
	Kind       string // auth, rate_limited, overloaded, bad_request, upstream, grant, cancelled, internal, …
	Message    string
	RetryAfter time.Duration
	Stored     bool
	Incomplete bool
}

func (e *AnswerError) Error() string {
	s := "the answer failed (" + e.Kind + ")"
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// SendResult describes a send, complete or not.
type SendResult struct {
	RequestID          string
	PromptMessageID    string
	AssistantMessageID string
	Model              string
	Usage              api.Usage
	FinishReason       string
	Duration           time.Duration // as the server measured it
	EgressPort         int
	// Chunks counts the answer's chunks that were opened and delivered.
	Chunks int
	// Incomplete: the answer did not arrive whole (an error event, a
	// broken or cut stream, a cancellation). What onDelta received is all
	// there is.
	Incomplete bool
	// Stored: the server reported the turn stored (always true after a
	// done event; from the error event otherwise).
	Stored bool
	// ErrorKind is the error event's kind, "stream" for a broken or cut
	// stream, "tampered" for a chunk that does not open; "" on success.
	ErrorKind string
	// PinnedIdentity is the runtime identity this send pinned on first
	// use; "" when it was pinned before.
	PinnedIdentity string
}

// Send sends prompt to a conversation and streams the answer: it opens the
// provider credential, encrypts the prompt under the conversation key,
// seals a grant to the verified runtime key, and calls onDelta with each
// piece of plaintext as it arrives, in order. model "" means the provider's
// default; temperature nil the provider's default.
//
// On success the result describes the stored turn. Otherwise the error is
// an *AnswerError (the stream's error event), or wraps ErrStreamBroken,
// ErrChunkTampered or ErrStreamIdle, or is a failure before anything was
// sent; the result, when not nil, says how far it got (Incomplete, Stored).
// prompt stays the caller's to wipe.
func (ch *Chat) Send(ctx context.Context, conversationID string, prompt []byte, model string, temperature *float64, onDelta func(text string)) (*SendResult, error) {
	if err := ch.sess.Active(ch.now()); err != nil {
		return nil, err
	}
	if len(prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if !utf8.Valid(prompt) {
		return nil, errors.New("the prompt is not valid UTF-8 text")
	}
	user := ch.sess.UserID
	d, err := ch.detail(ctx, conversationID, 1, "")
	if err != nil {
		return nil, err
	}
	provider := d.Conversation.Provider
	if model == "" {
		model = DefaultModel(provider)
	}
	if model == "" {
		return nil, fmt.Errorf("conversation %s uses provider %q, which this client does not know; give --model", conversationID, provider)
	}
	rawKey, convKey, err := ch.conversationKey(d.Conversation)
	if err != nil {
		return nil, err
	}
	defer clear(rawKey)
	defer convKey.Wipe()

	res := &SendResult{RequestID: uuid.NewString(), PromptMessageID: uuid.NewString(), AssistantMessageID: uuid.NewString(), Model: model}
	rk, err := ch.RuntimeKey(ctx)
	if err != nil {
		return nil, err
	}
	if rk.NewlyPinned {
		res.PinnedIdentity = rk.Identity
	}
	cred, err := ch.providerCredential(ctx, provider)
	if err != nil {
		return res, err
	}
	defer clear(cred)

	encPrompt, err := crypto.Seal(convKey, crypto.MessageContext(user, res.PromptMessageID), prompt)
	if err != nil {
		return res, fmt.Errorf("encrypt prompt: %w", err)
	}
	grant := worker.Grant{
		Version: 1, RequestID: res.RequestID, UserID: user, ConversationID: conversationID,
		AssistantMessageID: res.AssistantMessageID, PromptMessageID: res.PromptMessageID, Provider: provider, Model: model,
		Temperature: temperature, ExpiresAt: ch.now().Add(grantLifetime).UTC(),
	}
	plain, err := grantJSON(grant, rawKey, cred)
	if err != nil {
		return res, err
	}
	sealed, err := crypto.SealTo(rk.Public, crypto.GrantContext(user, res.RequestID), plain)
	clear(plain)
	if err != nil {
		return res, fmt.Errorf("seal grant: %w", err)
	}
	clear(cred)

	body, err := ch.postMessage(ctx, conversationID, api.SendMessageRequest{
		RequestID: res.RequestID, PromptMessageID: res.PromptMessageID, EncryptedPrompt: encPrompt,
		AssistantMessageID: res.AssistantMessageID, Grant: sealed, KeyID: rk.ID, Model: model, Temperature: temperature,
	})
	if notLinked(err) {
		return res, &NotLinkedError{Provider: provider, Err: err}
	}
	if err != nil {
		return res, err
	}
	defer body.Close()
	s := &answerStream{user: user, messageID: res.AssistantMessageID, key: convKey, onDelta: onDelta, res: res}
	err = s.read(body)
	if err != nil && ctx.Err() != nil {
		res.Incomplete, res.ErrorKind = true, "cancelled"
		return res, ctx.Err()
	}
	return res, err
}

// grantJSON is json.Marshal(g) with the two secrets — the conversation key
// and the credential — written straight into the one buffer the caller
// clears, rather than through Go strings that cannot be wiped. The
// result decodes as a worker.Grant (a test holds the two in step).
func grantJSON(g worker.Grant, convKey, credential []byte) ([]byte, error) {
	if !utf8.Valid(credential) {
		return nil, errors.New("the provider credential is not text; link it again")
	}
	g.ConversationKey, g.Credential = "", ""
	pub, err := json.Marshal(grantPublic{
		Version: g.Version, RequestID: g.RequestID, UserID: g.UserID, ConversationID: g.ConversationID,
		AssistantMessageID: g.AssistantMessageID, PromptMessageID: g.PromptMessageID, Provider: g.Provider, Model: g.Model,
		Temperature: g.Temperature, MaxTokens: g.MaxTokens, ExpiresAt: g.ExpiresAt,
	})
	if err != nil {
		return nil, fmt.Errorf("encode grant: %w", err)
	}
	keyText := crypto.EncodeText(convKey)
	b := make([]byte, 0, len(pub)+len(keyText)+2*len(credential)+48)
	b = append(b, pub[:len(pub)-1]...) // without the closing brace
	b = append(b, `,"conversation_key":"`...)
	b = append(b, keyText...)
	b = append(b, `","credential":`...)
	b = appendJSONString(b, credential)
	b = append(b, '}')
	return b, nil
}

// grantPublic is worker.Grant without its two secrets.
type grantPublic struct {
	Version            int       `json:"v"`
	RequestID          string    `json:"request_id"`
	UserID             string    `json:"user_id"`
	ConversationID     string    `json:"conversation_id"`
	AssistantMessageID string    `json:"assistant_message_id"`
	PromptMessageID    string    `json:"prompt_message_id"`
	Provider           string    `json:"provider"`
	Model              string    `json:"model"`
	Temperature        *float64  `json:"temperature,omitempty"`
	MaxTokens          int       `json:"max_tokens,omitempty"`
	ExpiresAt          time.Time `json:"expires_at"`
}

// appendJSONString appends s (valid UTF-8) as a JSON string.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// streamBody is the answer stream's body with an idle watchdog.
type streamBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
	timer  *time.Timer
	idle   time.Duration
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	return n, err
}

func (b *streamBody) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.ReadCloser.Close()
}

// postMessage sends the request and returns the event stream. A non-2xx
// answer is an *APIError (e.g. 429 when too many streams are open).
func (ch *Chat) postMessage(ctx context.Context, id string, req api.SendMessageRequest) (*streamBody, error) {
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	idle := ch.StreamIdle
	if idle <= 0 {
		idle = 60 * time.Second
	}
	sctx, cancel := context.WithCancelCause(ctx)
	hreq, err := http.NewRequestWithContext(sctx, http.MethodPost, ch.c.base+"/v1/chat/"+url.PathEscape(id)+"/messages", bytes.NewReader(in))
	if err != nil {
		cancel(nil)
		return nil, &UnreachableError{Server: ch.c.base, Err: err}
	}
	hreq.Header.Set("Accept", "text/event-stream")
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "polydev-cli/"+buildinfo.Read().Version)
	hreq.Header.Set("Authorization", "Bearer "+ch.sess.Token)
	// The client's own timeout bounds a whole exchange; a stream is
	// bounded by ctx and a watchdog instead: the answer's headers come with
	// its first chunk (a failure before it is a plain error answer), so
	// they may take as long as the provider's first token; after them
	// keep-alives arrive every few seconds.
	hc := *ch.c.hc
	hc.Timeout = 0
	timer := time.AfterFunc(max(idle, grantLifetime), func() { cancel(ErrStreamIdle) })
	resp, err := hc.Do(hreq)
	if err != nil {
		timer.Stop()
		cause := context.Cause(sctx)
		cancel(nil)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(cause, ErrStreamIdle):
			return nil, cause
		}
		return nil, &UnreachableError{Server: ch.c.base, Err: unwrapURLError(err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		timer.Stop()
		defer cancel(nil)
		defer resp.Body.Close()
		return nil, conversationError(id, decodeError(resp))
	}
	timer.Reset(idle)
	return &streamBody{ReadCloser: &causeReader{resp.Body, sctx}, cancel: cancel, timer: timer, idle: idle}, nil
}

// causeReader reports the watchdog's cause instead of a bare
// "context canceled" when the stream is cut for idleness.
type causeReader struct {
	r   io.Reader
	ctx context.Context
}

func (c *causeReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		if cause := context.Cause(c.ctx); errors.Is(cause, ErrStreamIdle) {
			return n, cause
		}
	}
	return n, err
}

func (c *causeReader) Close() error {
	if rc, ok := c.r.(io.Closer); ok {
		return rc.Close()
	}
	return nil
}

// maxEventSize bounds one server-sent event (a chunk is far smaller).
const maxEventSize = 1 << 20

// answerStream reads the events of docs/api.md "Chat" and opens the
// chunks in order.
type answerStream struct {
	user, messageID string
	key             crypto.Key
	onDelta         func(string)
	res             *SendResult

	next  uint64 // the sequence number expected next
	final bool   // the final chunk arrived
}

// read consumes the stream to its done or error event.
func (s *answerStream) read(r io.Reader) error {
	ev := newEventReader(r, maxEventSize)
	for {
		name, data, err := ev.next()
		if errors.Is(err, io.EOF) {
			s.res.Incomplete, s.res.ErrorKind = true, "stream"
			if s.final {
				return fmt.Errorf("%w: the stream ended after the whole answer but without its done event; the server may not have stored it", ErrStreamBroken)
			}
			return fmt.Errorf("%w: the stream ended before the answer was complete", ErrStreamBroken)
		}
		if err != nil {
			s.res.Incomplete = true
			if s.res.ErrorKind == "" {
				s.res.ErrorKind = "stream"
			}
			if errors.Is(err, ErrStreamIdle) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrStreamBroken, err)
		}
		switch name {
		case "", "message":
			if err := s.chunk(data); err != nil {
				s.res.Incomplete = true
				return err
			}
		case "done":
			return s.done(data)
		case "error":
			return s.failed(data)
		default:
			// An event this client does not know; a newer server may send it.
		}
	}
}

func (s *answerStream) chunk(data []byte) error {
	c, err := api.ParseStreamChunk(data)
	if err != nil || c.EncryptedChunk == "" {
		s.res.ErrorKind = "stream"
		return fmt.Errorf("%w: a data event is not a chunk", ErrStreamBroken)
	}
	switch {
	case s.final:
		s.res.ErrorKind = "stream"
		return fmt.Errorf("%w: chunk %d arrived after the final chunk", ErrStreamBroken, c.Seq)
	case c.Seq != s.next:
		s.res.ErrorKind = "stream"
		return fmt.Errorf("%w: chunk %d arrived where chunk %d was expected", ErrStreamBroken, c.Seq, s.next)
	}
	pt, err := crypto.Open(s.key, crypto.ChunkContext(s.user, s.messageID, c.Seq, c.Final), c.EncryptedChunk)
	if err != nil {
		s.res.ErrorKind = "tampered"
		return fmt.Errorf("%w: chunk %d: %s; it was damaged or tampered with on the way, so the answer cannot be trusted",
			ErrChunkTampered, c.Seq, crypto.Code(err))
	}
	s.next++
	s.final = c.Final
	s.res.Chunks++
	if len(pt) > 0 && s.onDelta != nil {
		s.onDelta(string(pt))
	}
	clear(pt)
	return nil
}

func (s *answerStream) done(data []byte) error {
	var d api.StreamDone
	if err := json.Unmarshal(data, &d); err != nil {
		s.res.Incomplete, s.res.ErrorKind = true, "stream"
		return fmt.Errorf("%w: the done event is malformed", ErrStreamBroken)
	}
	r := s.res
	r.Usage, r.FinishReason, r.EgressPort = d.Usage, d.FinishReason, d.EgressPort
	r.Duration = time.Duration(d.DurationMS) * time.Millisecond
	if d.Model != "" {
		r.Model = d.Model
	}
	r.Stored = true
	switch {
	case !s.final:
		r.Incomplete, r.ErrorKind = true, "stream"
		return fmt.Errorf("%w: the server reported the answer done, but its final chunk never arrived", ErrStreamBroken)
	case d.AssistantMessageID != "" && d.AssistantMessageID != s.messageID:
		r.ErrorKind = "stream"
		return fmt.Errorf("%w: the done event names message %s, not %s", ErrStreamBroken, d.AssistantMessageID, s.messageID)
	}
	return nil
}

func (s *answerStream) failed(data []byte) error {
	var e api.StreamError
	if err := json.Unmarshal(data, &e); err != nil {
		s.res.Incomplete, s.res.ErrorKind = true, "stream"
		return fmt.Errorf("%w: the error event is malformed", ErrStreamBroken)
	}
	r := s.res
	r.Incomplete, r.Stored = true, e.Stored
	r.Usage, r.Duration = e.Usage, time.Duration(e.DurationMS)*time.Millisecond
	kind := e.Error.Code
	if kind == "" {
		kind = "upstream"
	}
	r.ErrorKind = kind
	return &AnswerError{Kind: kind, Message: e.Error.Message, RetryAfter: time.Duration(e.RetryAfterMS) * time.Millisecond,
		Stored: e.Stored, Incomplete: e.Incomplete}
}

// eventReader parses text/event-stream (the WHATWG "server-sent events"
// format): lines ending in LF or CRLF, "field: value" lines, comments
// starting with ':', events dispatched at a blank line. Only the event and
// data fields matter here; id and retry are ignored.
type eventReader struct {
	r   *bufio.Reader
	max int
}

func newEventReader(r io.Reader, max int) *eventReader {
	return &eventReader{r: bufio.NewReaderSize(r, 16<<10), max: max}
}

// next returns the next event's name ("" when it has none) and data, or
// io.EOF at the end of the stream (a partial event at the end is dropped,
// as the format says).
func (e *eventReader) next() (string, []byte, error) {
	var name string
	var data []byte
	hasData := false
	size := 0
	for {
		line, err := e.line()
		if err != nil {
			return "", nil, err
		}
		size += len(line)
		if size > e.max {
			return "", nil, fmt.Errorf("an event is larger than %d bytes", e.max)
		}
		if len(line) == 0 {
			if hasData {
				return name, data, nil
			}
			name = "" // an event without data is not dispatched
			continue
		}
		if line[0] == ':' {
			continue // a comment: keep-alive
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			name = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
}

// line returns the next line without its ending; the slice is valid until
// the next call.
func (e *eventReader) line() ([]byte, error) {
	var long []byte
	for {
		part, err := e.r.ReadSlice('\n')
		switch {
		case err == nil:
			if long != nil {
				part = append(long, part...)
			}
			part = part[:len(part)-1]
			if n := len(part); n > 0 && part[n-1] == '\r' {
				part = part[:n-1]
			}
			return part, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long)+len(part) > e.max {
				return nil, fmt.Errorf("a line is longer than %d bytes", e.max)
			}
			long = append(long, part...)
		case errors.Is(err, io.EOF):
			return nil, io.EOF // a line without its ending is dropped
		default:
			return nil, err
		}
	}
}
