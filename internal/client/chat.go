package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/crypto"
)

// The chat flows (docs/api.md "Chat"). Everything a conversation holds is
// encrypted here under its own random key (convKey), which the server keeps
// only wrapped by the account key: the title, each prompt, and — by the
// runtime worker, under the same key — each answer. To send a prompt the
// client builds a grant (the convKey and the provider credential, opened
// here from its sealed form) and seals it to the runtime's public key,
// checked against the pinned runtime identity (runtimekey.go); the control
// plane relays ciphertext only. The answer streams back as encrypted
// chunks (chatstream.go) that are opened here, in order.

// Providers a conversation can use, and the model a send uses when none is
// given.
var defaultModels = map[string]string{
	"openai":    "gpt-4o-mini",
	"anthropic": "claude-sonnet-4-5",
	"google":    "gemini-2.5-flash",
}

// DefaultModel returns the model used for provider when none is given, or
// "" for an unknown provider.
func DefaultModel(provider string) string { return defaultModels[provider] }

// CheckProvider reports whether provider is one Polydev speaks to.
func CheckProvider(provider string) error { return checkProvider(provider) }

// grantLifetime is how long a grant may be opened after it is made: long
// enough for a slow relay and some clock skew, far below the worker's
// MaxGrantLifetime.
const grantLifetime = 5 * time.Minute

// Errors of the chat flows that a caller turns into advice.
var (
	// ErrConversationNotFound: the server has no such conversation for
	// this account.
	ErrConversationNotFound = errors.New("no such conversation")
	// ErrProviderNotLinked: no credential is linked for the
	// conversation's provider.
	ErrProviderNotLinked = errors.New("no account is linked for this provider")
	// ErrConversationDamaged: the conversation's key, title or a message
	// does not open with this account's keys: damaged or tampered with.
	ErrConversationDamaged = errors.New("the conversation's ciphertext is damaged or was tampered with")
)

// NotLinkedError is ErrProviderNotLinked for one provider.
type NotLinkedError struct {
	Provider string
	Err      error // the API's answer
}

func (e *NotLinkedError) Error() string { return "no " + e.Provider + " account is linked" }

// Unwrap makes errors.Is match ErrProviderNotLinked and the API error.
func (e *NotLinkedError) Unwrap() []error { return []error{ErrProviderNotLinked, e.Err} }

// Chat acts on one user's conversations at one server. It borrows the
// session and the unlocked keys; the caller wipes the keys when done.
type Chat struct {
	c     *Client
	sess  *Session
	keys  *Keys
	state *State
	// Now is the clock (nil: time.Now); tests set it.
	Now func() time.Time
	// StreamIdle is how long Send waits for any byte of the answer stream
	// (keep-alives included) before it gives up (0: 60 s).
	StreamIdle time.Duration
}

// NewChat returns a Chat for sess with its unlocked keys; st holds the
// runtime identity pins.
func NewChat(c *Client, sess *Session, keys *Keys, st *State) *Chat {
	return &Chat{c: c, sess: sess, keys: keys, state: st}
}

func (ch *Chat) now() time.Time {
	if ch.Now != nil {
		return ch.Now()
	}
	return time.Now()
}

// ConversationInfo is a conversation with its title decrypted.
type ConversationInfo struct {
	ID        string
	Provider  string
	Title     string
	CreatedAt time.Time
	UpdatedAt time.Time
	// Err is set, and Title empty, when the title or key does not open
	// (wrapping ErrConversationDamaged).
	Err error
}

// ChatMessage is a stored message, decrypted.
type ChatMessage struct {
	ID         string
	Role       string // user, assistant, system, tool
	Text       string
	Incomplete bool // the answer broke off; Text is the part that arrived
	Model      string
	TokensUsed int
	Duration   time.Duration
	EgressPort int
	CreatedAt  time.Time
	// Err is set, and Text empty, when the content does not open (wrapping
	// ErrConversationDamaged).
	Err error
}

// ConversationView is a conversation and all its messages, oldest first.
type ConversationView struct {
	ConversationInfo
	Messages []ChatMessage
}

// CreateConversation makes a conversation with provider and an optional
// title: a fresh convKey wrapped by the account key, the title encrypted
// under it. It returns the new id.
func (ch *Chat) CreateConversation(ctx context.Context, provider, title string) (string, error) {
	if err := CheckProvider(provider); err != nil {
		return "", err
	}
	if err := ch.sess.Active(ch.now()); err != nil {
		return "", err
	}
	id := uuid.NewString()
	user := ch.sess.UserID
	convKey := crypto.NewKey()
	defer convKey.Wipe()
	wrapped, err := crypto.WrapKey(ch.keys.Account, crypto.ConversationKeyContext(user, id), convKey)
	if err != nil {
		return "", fmt.Errorf("wrap conversation key: %w", err)
	}
	var encTitle string
	if title != "" {
		if encTitle, err = crypto.Seal(convKey, crypto.ConversationTitleContext(user, id), []byte(title)); err != nil {
			return "", fmt.Errorf("encrypt title: %w", err)
		}
	}
	req := api.CreateConversationRequest{ConversationID: id, Provider: provider, WrappedKey: wrapped, EncryptedTitle: encTitle}
	var out api.CreateConversationResponse
	if err := ch.c.do(ctx, http.MethodPost, "/v1/chat/sessions", ch.sess.Token, req, &out); err != nil {
		return "", fmt.Errorf("create conversation: %w", sessionError(err))
	}
	if out.ConversationID != id {
		return "", fmt.Errorf("create conversation: the server answered with id %q, not %q", out.ConversationID, id)
	}
	return id, nil
}

// ListConversations returns one page of conversations, most recently
// updated first, with titles decrypted, and the cursor of the next page
// ("" after the last). limit ≤ 0 leaves the page size to the server.
func (ch *Chat) ListConversations(ctx context.Context, limit int, cursor string) ([]ConversationInfo, string, error) {
	if err := ch.sess.Active(ch.now()); err != nil {
		return nil, "", err
	}
	var out api.ConversationList
	if err := ch.c.do(ctx, http.MethodGet, "/v1/chat/sessions"+pageQuery(limit, cursor), ch.sess.Token, nil, &out); err != nil {
		return nil, "", fmt.Errorf("list conversations: %w", sessionError(err))
	}
	infos := make([]ConversationInfo, len(out.Sessions))
	for i, c := range out.Sessions {
		infos[i] = ch.describe(c)
	}
	return infos, out.NextCursor, nil
}

// describe decrypts a conversation's title.
func (ch *Chat) describe(c api.Conversation) ConversationInfo {
	info := ConversationInfo{ID: c.ConversationID, Provider: c.Provider, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	if c.EncryptedTitle == "" {
		return info
	}
	raw, key, err := ch.conversationKey(c)
	if err != nil {
		info.Err = err
		return info
	}
	defer clear(raw)
	defer key.Wipe()
	title, err := crypto.Open(key, crypto.ConversationTitleContext(ch.sess.UserID, c.ConversationID), c.EncryptedTitle)
	if err != nil {
		info.Err = fmt.Errorf("%w: title: %s", ErrConversationDamaged, crypto.Code(err))
		return info
	}
	info.Title = string(title)
	clear(title)
	return info
}

// Conversation returns a conversation and all its messages, decrypted. A
// message that does not open is returned with Err set; the caller shows it
// as damaged.
func (ch *Chat) Conversation(ctx context.Context, id string) (*ConversationView, error) {
	if err := ch.sess.Active(ch.now()); err != nil {
		return nil, err
	}
	var view *ConversationView
	var key crypto.Key
	defer func() { key.Wipe() }()
	cursor := ""
	for {
		d, err := ch.detail(ctx, id, 0, cursor)
		if err != nil {
			return nil, err
		}
		if view == nil {
			view = &ConversationView{ConversationInfo: ch.describe(d.Conversation)}
			raw, k, err := ch.conversationKey(d.Conversation)
			if err != nil {
				return nil, err
			}
			clear(raw)
			key = k
		}
		for _, m := range d.Messages {
			view.Messages = append(view.Messages, ch.openMessage(key, m))
		}
		if d.NextCursor == "" || d.NextCursor == cursor {
			return view, nil
		}
		cursor = d.NextCursor
	}
}

func (ch *Chat) openMessage(key crypto.Key, m api.Message) ChatMessage {
	cm := ChatMessage{
		ID: m.ID, Role: m.Role, Incomplete: m.Status == "incomplete", Model: m.Model, TokensUsed: m.TokensUsed,
		Duration: time.Duration(m.DurationMS) * time.Millisecond, EgressPort: m.EgressPort, CreatedAt: m.CreatedAt,
	}
	// An answer that broke off before its first byte is stored empty.
	if m.EncryptedContent == "" && cm.Incomplete {
		return cm
	}
	pt, err := crypto.Open(key, crypto.MessageContext(ch.sess.UserID, m.ID), m.EncryptedContent)
	if err != nil {
		cm.Err = fmt.Errorf("%w: message %s: %s", ErrConversationDamaged, m.ID, crypto.Code(err))
		return cm
	}
	cm.Text = string(pt)
	clear(pt)
	return cm
}

// detail fetches one page of GET /v1/chat/{id}.
func (ch *Chat) detail(ctx context.Context, id string, limit int, cursor string) (*api.ConversationDetail, error) {
	var d api.ConversationDetail
	err := ch.c.do(ctx, http.MethodGet, "/v1/chat/"+url.PathEscape(id)+pageQuery(limit, cursor), ch.sess.Token, nil, &d)
	if err != nil {
		return nil, conversationError(id, err)
	}
	if d.Conversation.ConversationID != id {
		return nil, fmt.Errorf("conversation %s: the server answered with conversation %q", id, d.Conversation.ConversationID)
	}
	return &d, nil
}

// DeleteConversation deletes a conversation and its messages on the
// server, and what this device remembers of it.
func (ch *Chat) DeleteConversation(ctx context.Context, id string) error {
	if err := ch.sess.Active(ch.now()); err != nil {
		return err
	}
	if err := ch.c.do(ctx, http.MethodDelete, "/v1/chat/"+url.PathEscape(id), ch.sess.Token, nil, nil); err != nil {
		return conversationError(id, err)
	}
	return ch.state.SetConversationModel(id, "")
}

// RuntimeKey fetches the runtime key, checks its signature and the pinned
// identity (pinning it on first use); see FetchRuntimeKey.
func (ch *Chat) RuntimeKey(ctx context.Context) (*RuntimeKey, error) {
	return FetchRuntimeKey(ctx, ch.c, ch.state, ch.sess.Token, ch.now())
}

// conversationKey opens a conversation's wrapped key. It returns the raw
// bytes too (for a grant); the caller clears them and wipes the key.
// Unwrapping is a symmetric open of the 32 raw bytes (docs/crypto.md §7).
func (ch *Chat) conversationKey(c api.Conversation) ([]byte, crypto.Key, error) {
	raw, err := crypto.Open(ch.keys.Account, crypto.ConversationKeyContext(ch.sess.UserID, c.ConversationID), c.WrappedKey)
	if err != nil {
		return nil, crypto.Key{}, fmt.Errorf("%w: conversation %s key: %s", ErrConversationDamaged, c.ConversationID, crypto.Code(err))
	}
	key, err := crypto.KeyFromBytes(raw)
	if err != nil {
		clear(raw)
		return nil, crypto.Key{}, fmt.Errorf("%w: conversation %s key: %s", ErrConversationDamaged, c.ConversationID, crypto.Code(err))
	}
	return raw, key, nil
}

// providerCredential fetches and opens the user's sealed credential for
// provider. The caller clears it.
func (ch *Chat) providerCredential(ctx context.Context, provider string) ([]byte, error) {
	sealed, err := ch.c.SealedToken(ctx, ch.sess.Token, provider)
	switch {
	case notLinked(err):
		return nil, &NotLinkedError{Provider: provider, Err: err}
	case err != nil:
		return nil, sessionError(err)
	}
	// Opened at the provider's own place: a credential of another
	// provider or user does not open here.
	cred, err := crypto.OpenSealed(ch.keys.Private, crypto.ProviderTokenContext(ch.sess.UserID, provider), sealed)
	if err != nil {
		return nil, fmt.Errorf("the %s credential the server returned does not open with your key (damaged or tampered with): %s",
			provider, crypto.Code(err))
	}
	if len(cred) == 0 {
		return nil, fmt.Errorf("the linked %s credential is empty; link it again", provider)
	}
	return cred, nil
}

func pageQuery(limit int, cursor string) string {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// codeProviderNotLinked is the chat API's answer when the conversation's
// provider has no linked credential (the accounts API says CodeNotLinked).
const codeProviderNotLinked = "provider_not_linked"

func notLinked(err error) bool {
	return HasCode(err, codeProviderNotLinked) || HasCode(err, CodeNotLinked)
}

func conversationError(id string, err error) error {
	if notLinked(err) {
		return err
	}
	if HasCode(err, CodeNotFound) {
		return fmt.Errorf("%w: %s (%w)", ErrConversationNotFound, id, err)
	}
	return fmt.Errorf("conversation %s: %w", id, sessionError(err))
}

// The model chosen for a conversation is remembered on this device only,
// in chat-models.json in the state directory (mode 0600): a conversation
// id and a model name, no content.

const modelsFile = "chat-models.json"

type modelFile struct {
	Version int               `json:"version"`
	Models  map[string]string `json:"models"` // conversation id → model
}

// ConversationModel returns the model remembered for a conversation, or "".
func (s *State) ConversationModel(id string) (string, error) {
	m, err := s.loadModels()
	if err != nil {
		return "", err
	}
	return m.Models[id], nil
}

// SetConversationModel remembers model for a conversation ("" forgets it).
func (s *State) SetConversationModel(id, model string) error {
	m, err := s.loadModels()
	if err != nil {
		return err
	}
	if m.Models[id] == model {
		return nil
	}
	if model == "" {
		delete(m.Models, id)
	} else {
		m.Models[id] = model
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeFile(modelsFile, append(b, '\n')); err != nil {
		return fmt.Errorf("remember the conversation's model: %w", err)
	}
	return nil
}

func (s *State) loadModels() (*modelFile, error) {
	m := &modelFile{Version: 1, Models: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(s.dir, modelsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", modelsFile, err)
	}
	// A damaged file only loses remembered model names.
	if json.Unmarshal(b, m) != nil || m.Models == nil {
		m.Models = map[string]string{}
	}
	return m, nil
}
