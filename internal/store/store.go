// Package store is Polydev's persistence: the domain records and the
// interfaces the control plane uses to keep them. Two backends implement it
// — store/sqlite (the embedded default) and store/postgres (production,
// with row-level security) — and both pass the conformance suite in
// store/storetest.
//
// Everything a user owns is ciphertext made on their device (see
// docs/crypto.md); the store keeps it opaque. Tenant isolation is part of
// the interface, not a convention: every method that touches a user's rows
// takes the acting user's id, `as`, and only ever sees that user's rows. In
// PostgreSQL the database enforces it (each transaction carries the id as
// its claims, and row-level security policies compare against auth.uid());
// in SQLite every statement carries it. A row of another user is
// indistinguishable from a missing one: ErrNotFound.
//
// Pre-authentication lookups (a user by email at prelogin and login, a
// session by its token hash) are the only reads not scoped to a user. They
// go through the Auth methods, which in PostgreSQL run under a separate
// database role whose policies reach only the users and sessions tables.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Backends wrap them with the operation; they
// never expose SQL text.
//
// A record that names another user as its owner (a session, token or
// conversation whose UserID is not the acting user) is refused with
// ErrNotFound: from the acting user's view, that user does not exist.
var (
	// ErrNotFound: no such row visible to the acting user.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique value is taken (an email, an egress port).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the record breaks a constraint of the schema.
	ErrInvalid = errors.New("invalid record")
)

// Providers accepted in provider_tokens, conversations and jobs.
var Providers = []string{"openai", "anthropic", "google"}

// User is an account. Everything secret in it is either hashed by the
// server (AuthHash) or wrapped on the user's device.
type User struct {
	ID     string // UUID, chosen by the server at registration
	Number int64  // unique and increasing from 1, assigned by the store; egress ports derive from it.
	// SQLite hands them out without gaps; PostgreSQL's identity column may
	// skip a number after a failed insert (a gap only leaves a port unused).
	Email string // normalised (lowercase) by the caller

	KDFParams []byte // the client's KDF record (docs/crypto.md §3.1), canonical JSON
	AuthHash  []byte // Argon2id(authKey) computed by the server
	AuthSalt  []byte // the server's salt for AuthHash
	AuthAlgo  string // the server-side hash parameters, e.g. "argon2id$m=65536,t=2,p=1"

	WrappedAccountKey string // accountKey wrapped by wrapKey
	WrappedPrivateKey string // the private key record wrapped by accountKey
	PublicKey         string // the public key record, plain

	EncryptedMasterKeyHint string // optional, client-encrypted

	CreatedAt time.Time
	UpdatedAt time.Time
}

// Credentials are what a password change replaces, all at once.
type Credentials struct {
	KDFParams         []byte
	AuthHash          []byte
	AuthSalt          []byte
	AuthAlgo          string
	WrappedAccountKey string
	WrappedPrivateKey string
}

// Session is a login. Only the hash of its bearer token is stored.
type Session struct {
	ID         string // UUID
	UserID     string
	TokenHash  []byte // SHA-256 of the bearer token
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastSeenAt time.Time
	RevokedAt  time.Time // zero while active
	ClientIP   string
	UserAgent  string
}

// AuditEvent is one security event. It carries no personal data beyond the
// user id, which erasure removes (the event itself is kept).
type AuditEvent struct {
	ID        int64
	UserID    string // "" for events without an account (an unknown email's failed login)
	Event     string // e.g. "register", "login_success", "login_failure", "logout", "password_change", "erasure"
	ClientIP  string
	Detail    string // JSON object, no secrets, no plaintext
	CreatedAt time.Time
}

// ProviderToken is a linked provider credential, sealed on the client to
// the user's own public key.
type ProviderToken struct {
	UserID                string
	Provider              string
	EncryptedRefreshToken string
	Scopes                []string
	ExpiresAt             time.Time // zero: none
	EgressPort            int
	EgressIP              string
	LastRotatedAt         time.Time
	LastUsedAt            time.Time
	CreatedAt             time.Time
}

// Conversation is a chat; its key is wrapped by the user's account key.
type Conversation struct {
	ID             string // UUID, chosen by the client (it is bound into ciphertexts)
	UserID         string
	Provider       string
	WrappedKey     string
	EncryptedTitle string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Message is one encrypted turn of a conversation.
type Message struct {
	ID               string // UUID, chosen by the client
	ConversationID   string
	Role             string // user, assistant, system, tool
	EncryptedContent string
	TokensUsed       int
	Model            string
	EgressIP         string
	EgressPort       int
	DurationMS       int64
	// Status is MessageComplete, or MessageIncomplete for an answer that
	// broke off (a provider failure or a cancelled stream) and was stored
	// as far as it arrived. Empty means complete.
	Status    string
	CreatedAt time.Time
}

// Message roles.
const (
	MessageRoleUser      = "user"
	MessageRoleAssistant = "assistant"
	MessageRoleSystem    = "system"
	MessageRoleTool      = "tool"
)

// Message statuses.
const (
	MessageComplete   = "complete"
	MessageIncomplete = "incomplete"
)

// Page selects one page of a list: at most Limit rows (0 means
// DefaultPageLimit; above MaxPageLimit is ErrInvalid) after Cursor, the
// opaque value a previous page returned ("" for the first page). A cursor
// that does not parse is ErrInvalid.
type Page struct {
	Limit  int
	Cursor string
}

// Page sizes.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 200
)

// Accounts keeps users. Scoped methods see only the acting user.
type Accounts interface {
	// CreateUser inserts u, assigning u.Number, u.CreatedAt and u.UpdatedAt.
	// ErrConflict if the email is taken; ErrInvalid for a broken record.
	CreateUser(ctx context.Context, u *User) error
	// User returns the acting user's own record.
	User(ctx context.Context, as string) (*User, error)
	// SetCredentials replaces the password-derived fields (a password
	// change) and revokes every session of the user except keepSession.
	SetCredentials(ctx context.Context, as string, c Credentials, keepSession string) error
	// DeleteUser erases the user and everything they own.
	DeleteUser(ctx context.Context, as string) error
}

// SessionTouchInterval is the resolution of Session.LastSeenAt: a session
// used again within this long of its recorded last use is not written to.
// Every authenticated request looks its session up; writing each time would
// put a write transaction (a durable commit, and on SQLite the single
// writer's lock) in front of every read.
const SessionTouchInterval = time.Minute

// Auth holds the pre-authentication lookups, the only reads not scoped to
// a user.
type Auth interface {
	// UserByEmail finds a user for prelogin and login.
	UserByEmail(ctx context.Context, email string) (*User, error)
	// ActiveSession finds an unrevoked, unexpired session by token hash at
	// time now, and records now as its last use when the recorded one is
	// SessionTouchInterval or more older (so most requests write nothing).
	// The session is returned as found: its LastSeenAt is the previous
	// recorded use.
	ActiveSession(ctx context.Context, tokenHash []byte, now time.Time) (*Session, error)
}

// Sessions keeps logins.
type Sessions interface {
	// CreateSession inserts s for s.UserID (who must be the acting user).
	CreateSession(ctx context.Context, as string, s *Session) error
	// RevokeSession marks one of the acting user's sessions revoked at now.
	// Revoking a revoked session succeeds and keeps the first time.
	RevokeSession(ctx context.Context, as, id string, now time.Time) error
}

// Audit appends security events.
type Audit interface {
	// Record appends e, assigning e.ID and e.CreatedAt. An e.UserID of no
	// existing user is ErrNotFound.
	Record(ctx context.Context, e *AuditEvent) error
	// AuditEvents lists the acting user's events, newest first, at most
	// limit of them (limit < 1 is ErrInvalid).
	AuditEvents(ctx context.Context, as string, limit int) ([]AuditEvent, error)
}

// ProviderTokens keeps linked provider credentials.
type ProviderTokens interface {
	// PutProviderToken inserts or replaces the acting user's token for
	// t.Provider, as given, port included: the port is taken for the user
	// (ErrConflict when another user holds it) and a port no token of the
	// user uses any more is released. Linking and rotation go through
	// Egress, which chooses the port.
	PutProviderToken(ctx context.Context, as string, t *ProviderToken) error
	// ProviderTokens lists the acting user's tokens, by provider.
	ProviderTokens(ctx context.Context, as string) ([]ProviderToken, error)
	// DeleteProviderToken removes the acting user's token for provider
	// and releases its port if no other token of the user uses it.
	DeleteProviderToken(ctx context.Context, as, provider string) error
}

// Conversations keeps chats and their messages.
type Conversations interface {
	// CreateConversation inserts c (its ID chosen by the client), assigning
	// CreatedAt and UpdatedAt.
	CreateConversation(ctx context.Context, as string, c *Conversation) error
	Conversation(ctx context.Context, as, id string) (*Conversation, error)
	// Conversations lists one page of the acting user's conversations, most
	// recently updated first, and the cursor of the next page ("" after the
	// last). A conversation updated while paging may be seen twice or
	// missed; none is repeated within a page.
	Conversations(ctx context.Context, as string, page Page) ([]Conversation, string, error)
	// SetConversationTitle replaces the encrypted title and bumps UpdatedAt.
	SetConversationTitle(ctx context.Context, as, id, encryptedTitle string) error
	DeleteConversation(ctx context.Context, as, id string) error
	// AddMessages appends ms, in order and in one transaction (all or
	// none), to one of the acting user's conversations and bumps its
	// UpdatedAt. Every message names the same conversation.
	AddMessages(ctx context.Context, as string, ms ...*Message) error
	// FinishMessage replaces the content and metadata (EncryptedContent,
	// TokensUsed, Model, EgressIP, EgressPort, DurationMS, Status) of one
	// of the acting user's assistant messages that is still
	// MessageIncomplete — the placeholder a stream stores when its first
	// chunk arrives — identified by m.ID and m.ConversationID. Any other
	// message is ErrNotFound: a finished answer cannot be rewritten.
	FinishMessage(ctx context.Context, as string, m *Message) error
	// Messages lists one page of a conversation's messages, oldest first,
	// and the cursor of the next page ("" after the last).
	Messages(ctx context.Context, as, conversationID string, page Page) ([]Message, string, error)
	// ChatTurn reads at once, in one transaction, what a chat turn needs
	// before its first byte: one of the acting user's conversations, the
	// user's token for its provider and the first page of its messages.
	// A missing or foreign conversation is ErrNotFound.
	ChatTurn(ctx context.Context, as, conversationID string) (*ChatTurn, error)
}

// ChatTurn is what Conversations.ChatTurn reads.
type ChatTurn struct {
	Conversation Conversation
	// Token is the acting user's token for Conversation.Provider; nil when
	// that provider is not linked.
	Token *ProviderToken
	// Messages is the first page of the conversation's messages, oldest
	// first, as Messages returns it for Page{Limit: MaxPageLimit}; Next is
	// the cursor of the next page ("" when there is none).
	Messages []Message
	Next     string
}

// Store is everything the control plane keeps. It must be closed.
type Store interface {
	Accounts
	Auth
	Sessions
	Audit
	ProviderTokens
	Egress
	Conversations
	LoginVMStore
	// Ping checks the database is reachable and migrated (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the connections. Safe twice.
	Close() error
}
