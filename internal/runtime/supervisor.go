package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"polydev/internal/crypto"
	"polydev/internal/worker"
)

// Config configures a Supervisor.
type Config struct {
	// Identity signs every runtime key. It is the runtime role's long-term
	// key: load it with LoadIdentity so clients' pins survive restarts.
	Identity *crypto.IdentityKey
	// Rotate is how long a key is handed out before a fresh one replaces
	// it (default 6 h). Grace is how long a replaced key still opens grants
	// sealed to it (default 15 min, the longest a grant lives).
	Rotate, Grace time.Duration
	// Executor runs the tasks (in-process or in containers).
	Executor Executor
	// BaseURLs maps a provider name to its API root ("" or missing: the
	// provider's public endpoint).
	BaseURLs map[string]string
	Logger   *slog.Logger
	Now      func() time.Time
}

// Supervisor is the runtime: it owns the runtime key pairs and runs jobs
// on its Executor. It implements Keys and Runner.
type Supervisor struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	current  *runtimeKey
	previous *runtimeKey
	seen     map[string]time.Time // request id → when it may be forgotten
	pruned   time.Time            // when seen was last pruned
}

var (
	_ Keys   = (*Supervisor)(nil)
	_ Runner = (*Supervisor)(nil)
)

type runtimeKey struct {
	info KeyInfo
	priv *crypto.PrivateKey
	// users counts the tasks under way that were handed priv itself (an
	// executor in this process may use it); a retired key is wiped when the
	// last of them ends. Both fields are guarded by the supervisor's mutex.
	users   int
	retired bool
}

// retireLocked wipes k now, or when its last task ends. The caller has
// removed k from the supervisor, so no task takes it after this.
func (k *runtimeKey) retireLocked() {
	k.retired = true
	if k.users == 0 {
		k.priv.Wipe()
	}
}

// NewSupervisor makes a supervisor with a fresh runtime key.
func NewSupervisor(cfg Config) (*Supervisor, error) {
	if cfg.Identity == nil || cfg.Executor == nil {
		return nil, errors.New("runtime: identity and executor are required")
	}
	if cfg.Rotate <= 0 {
		cfg.Rotate = 6 * time.Hour
	}
	if cfg.Grace <= 0 {
		cfg.Grace = worker.MaxGrantLifetime
	}
	if cfg.Rotate < cfg.Grace {
		// A replaced key must outlive its grace before the next rotation
		// wipes it, or keys would vanish before their signed expiry.
		return nil, fmt.Errorf("runtime: the rotation period (%v) must be at least the grace period (%v)", cfg.Rotate, cfg.Grace)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, now: cfg.Now, seen: map[string]time.Time{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rotateLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// Rotate replaces the current key now; the replaced key keeps opening
// grants for the grace period.
func (s *Supervisor) Rotate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rotateLocked()
}

func (s *Supervisor) rotateLocked() error {
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Second)
	info := KeyInfo{
		ID:        "rk_" + uuid.NewString(),
		PublicKey: priv.Public().String(),
		CreatedAt: now,
		ExpiresAt: now.Add(s.cfg.Rotate + s.cfg.Grace),
		Identity:  s.cfg.Identity.Public(),
	}
	sig, err := s.cfg.Identity.Sign(crypto.KeyStatement{KeyID: info.ID, PublicKey: info.PublicKey, CreatedAt: info.CreatedAt, ExpiresAt: info.ExpiresAt})
	if err != nil {
		return err
	}
	info.Signature = sig
	if s.previous != nil {
		s.previous.retireLocked()
	}
	s.previous, s.current = s.current, &runtimeKey{info: info, priv: priv}
	s.log.Info("runtime key rotated", "key_id", info.ID, "expires_at", info.ExpiresAt)
	return nil
}

// maintainLocked rotates a key that is due and drops one past its grace.
func (s *Supervisor) maintainLocked() error {
	now := s.now()
	if !now.Before(s.current.info.CreatedAt.Add(s.cfg.Rotate)) {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	if s.previous != nil && !now.Before(s.previous.info.ExpiresAt) {
		s.previous.retireLocked()
		s.previous = nil
	}
	// Forgetting expired request ids walks the whole set: once a minute.
	if now.Sub(s.pruned) >= time.Minute {
		s.pruned = now
		for id, until := range s.seen {
			if now.After(until) {
				delete(s.seen, id)
			}
		}
	}
	return nil
}

// Loop rotates keys on schedule until ctx ends, so an idle runtime does not
// keep an old key alive.
func (s *Supervisor) Loop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			if err := s.maintainLocked(); err != nil {
				s.log.Error("runtime key rotation failed", "err", err)
			}
			s.mu.Unlock()
		}
	}
}

// CurrentKey implements Keys.
func (s *Supervisor) CurrentKey(context.Context) (KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.maintainLocked(); err != nil {
		return KeyInfo{}, err
	}
	return s.current.info, nil
}

// ErrReplay: a grant's request id was already used.
var ErrReplay = errors.New("request id already used")

// Run implements Runner.
func (s *Supervisor) Run(ctx context.Context, job worker.Job, emit func(worker.Event) error) error {
	s.mu.Lock()
	if err := s.maintainLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	var key *runtimeKey
	for _, k := range []*runtimeKey{s.current, s.previous} {
		if k != nil && k.info.ID == job.KeyID {
			key = k
		}
	}
	if key == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownKey, job.KeyID)
	}
	if _, ok := s.seen[job.RequestID]; ok {
		s.mu.Unlock()
		return ErrReplay
	}
	s.seen[job.RequestID] = s.now().Add(worker.MaxGrantLifetime + time.Minute)
	record, err := key.priv.ExportRecord()
	if err == nil {
		key.users++
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		if key.users--; key.users == 0 && key.retired {
			key.priv.Wipe()
		}
		s.mu.Unlock()
	}()
	defer clear(record)
	// The record crosses into a sandbox; an executor in this process uses
	// the parsed key itself and saves parsing it per request.
	task := worker.Task{Job: job, RuntimeKey: record, Key: key.priv, BaseURL: s.cfg.BaseURLs[job.Provider]}
	err = s.cfg.Executor.Execute(ctx, task, emit)
	var busy *BusyError
	if errors.As(err, &busy) {
		// No sandbox took the task, so its grant was never opened: the
		// same request may be retried.
		s.mu.Lock()
		delete(s.seen, job.RequestID)
		s.mu.Unlock()
	}
	return err
}

// LoadIdentity reads the identity key at path, or makes one there (mode
// 0600) when the file does not exist.
func LoadIdentity(path string) (*crypto.IdentityKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("runtime identity %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
		}
		id, err := crypto.ParseIdentity(string(b))
		clear(b)
		if err != nil {
			return nil, fmt.Errorf("runtime identity %s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	id, err := crypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	if _, err := f.WriteString(id.Record() + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("runtime identity: %w", err)
	}
	return id, nil
}
