package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// The client's state is one file, session.json, in a directory of its own
// (mode 0700; the file 0600), replaced atomically on every change. It
// holds what a later command needs to act for the user — the server, the
// account, the session token — and the key bundle as the server returned it:
// ciphertext and the KDF record only. Nothing in it opens without the
// password.

const (
	sessionFile  = "session.json"
	stateVersion = 1
	dirMode      = 0o700
	fileMode     = 0o600
)

// Errors a caller branches on to tell the user what to do.
var (
	// ErrNotLoggedIn: there is no session file, or it holds no token.
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrSessionExpired: the session's token has expired or the server
	// revoked it.
	ErrSessionExpired = errors.New("your session has expired")
)

// Session is the content of session.json.
type Session struct {
	Version    int    `json:"version"`
	Server     string `json:"server"`
	Email      string `json:"email"`
	UserID     string `json:"user_id"`
	UserNumber int64  `json:"user_number"`
	// Token is the bearer token; empty after logout.
	Token     string    `json:"token,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	KeyBundle
}

// Active reports whether s can be used at now: ErrNotLoggedIn without a
// token, ErrSessionExpired past its expiry.
func (s *Session) Active(now time.Time) error {
	switch {
	case s == nil || s.Token == "":
		return ErrNotLoggedIn
	case !s.ExpiresAt.IsZero() && !now.Before(s.ExpiresAt):
		return ErrSessionExpired
	}
	return nil
}

// LogValue keeps the token out of logs.
func (s *Session) LogValue() slog.Value {
	return slog.GroupValue(slog.String("server", s.Server), slog.String("email", s.Email),
		slog.String("user_id", s.UserID), slog.Time("expires_at", s.ExpiresAt))
}

// State is the client's state directory.
type State struct{ dir string }

// NewState returns the state kept in dir (created on first save).
func NewState(dir string) *State { return &State{dir: dir} }

// DefaultStateDir is $POLYDEV_CONFIG_DIR if set, else the polydev directory
// under the user's configuration directory (os.UserConfigDir).
func DefaultStateDir() (string, error) {
	if d := os.Getenv("POLYDEV_CONFIG_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory (set POLYDEV_CONFIG_DIR): %w", err)
	}
	return filepath.Join(d, "polydev"), nil
}

// Dir returns the state directory.
func (s *State) Dir() string { return s.dir }

// Path returns the session file's path.
func (s *State) Path() string { return filepath.Join(s.dir, sessionFile) }

// Load reads the session file; ErrNotLoggedIn if there is none.
func (s *State) Load() (*Session, error) {
	b, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotLoggedIn
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(b, &sess); err != nil {
		return nil, fmt.Errorf("session file %s is damaged (remove it and log in again): %w", s.Path(), err)
	}
	if sess.Version != stateVersion {
		return nil, fmt.Errorf("session file %s has version %d, this client knows %d (log in again)", s.Path(), sess.Version, stateVersion)
	}
	return &sess, nil
}

// Save replaces the session file atomically: a private temporary file in
// the same directory, synced, then renamed over the old one.
func (s *State) Save(sess *Session) error {
	sess.Version = stateVersion
	b, err := json.MarshalIndent(sess, "", "  ")
	if err != nil {
		return fmt.Errorf("encode session: %w", err)
	}
	if err := s.ensureDir(); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, ".session-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(fileMode) // in case of an unusual umask or platform
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.Path())
	}
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	// Make the rename durable; not every platform can sync a directory.
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ensureDir creates the state directory, or narrows an existing one, to
// mode 0700.
func (s *State) ensureDir() error {
	if err := os.MkdirAll(s.dir, dirMode); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if fi.Mode().Perm() != dirMode {
		if err := os.Chmod(s.dir, dirMode); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
	}
	return nil
}

// Logout removes the token from the session file and keeps the rest (the
// server and account are remembered). It is not an error to log out
// without a session.
func (s *State) Logout() error {
	sess, err := s.Load()
	if errors.Is(err, ErrNotLoggedIn) {
		return nil
	}
	if err != nil {
		return err
	}
	if sess.Token == "" {
		return nil
	}
	sess.Token, sess.ExpiresAt = "", time.Time{}
	return s.Save(sess)
}

// Remove deletes the session file (after the account is deleted). It is
// not an error if there is none.
func (s *State) Remove() error {
	if err := os.Remove(s.Path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove session: %w", err)
	}
	return nil
}
