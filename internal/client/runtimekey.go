package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"polydev/internal/api"
	"polydev/internal/crypto"
)

// The runtime key and its pinned identity.
//
// A grant — the conversation key and the provider credential, for one
// request — is sealed to the runtime's current public key, which the
// control plane relays from the runtime. A control plane that could slip in
// a key of its own could open every grant, so each runtime key is signed by
// the runtime's long-term identity key (Ed25519, held only by the runtime
// role), and the client trusts the first identity it sees for a server
// (trust on first use) and refuses any other afterwards. The pins are kept
// per server in runtime-identities.json in the state directory (mode 0600).
// Replacing a pin is a deliberate act: TrustRuntime, with the new identity
// obtained from the operator by another channel.

const pinsFile = "runtime-identities.json"

// ErrRuntimeIdentityChanged is wrapped by the *IdentityChangedError the
// client returns when a server presents a runtime identity other than the
// one pinned for it.
var ErrRuntimeIdentityChanged = errors.New("the runtime identity changed")

// ErrRuntimeKeyInvalid: the runtime key the server relayed is not validly
// signed by the identity it names, is malformed, or has expired.
var ErrRuntimeKeyInvalid = errors.New("the runtime key is not validly signed")

// IdentityChangedError says which identity was pinned and which one the
// server presents now. Nothing is sealed to a key it refused.
type IdentityChangedError struct {
	Server   string
	Pinned   string
	PinnedAt time.Time
	Served   string
}

func (e *IdentityChangedError) Error() string {
	return fmt.Sprintf("the runtime identity of %s has changed: pinned %s (since %s), the server now presents %s; "+
		"a server that substitutes its own runtime key would look exactly like this, so nothing was sent. "+
		"If the operator announced a new runtime identity, compare it with the one above and, if it matches, run: "+
		"polydev chat trust-runtime --identity %s",
		e.Server, e.Pinned, e.PinnedAt.UTC().Format(time.RFC3339), e.Served, e.Served)
}

// Unwrap makes errors.Is match ErrRuntimeIdentityChanged.
func (e *IdentityChangedError) Unwrap() error { return ErrRuntimeIdentityChanged }

// RuntimeKey is a runtime public key whose signature checked.
type RuntimeKey struct {
	ID        string
	Public    *crypto.PublicKey
	Identity  string // the runtime identity that signed it
	ExpiresAt time.Time
	// NewlyPinned is set when this call pinned Identity (first use).
	NewlyPinned bool
}

// RuntimePin is one pinned identity.
type RuntimePin struct {
	Identity string    `json:"identity"`
	PinnedAt time.Time `json:"pinned_at"`
}

type pinFile struct {
	Version int                   `json:"version"`
	Servers map[string]RuntimePin `json:"servers"`
}

// RuntimeKeyInfo fetches GET /v1/runtime/key as the server relays it,
// unchecked; use FetchRuntimeKey.
func (c *Client) RuntimeKeyInfo(ctx context.Context, token string) (*api.RuntimeKey, error) {
	var out api.RuntimeKey
	if err := c.do(ctx, http.MethodGet, "/v1/runtime/key", token, nil, &out); err != nil {
		return nil, fmt.Errorf("runtime key: %w", err)
	}
	return &out, nil
}

// VerifyRuntimeKey checks that info is signed by the identity it names,
// that its public key parses and that it has not expired at now. It does
// not look at the pin.
func VerifyRuntimeKey(info *api.RuntimeKey, now time.Time) (*RuntimeKey, error) {
	st := crypto.KeyStatement{KeyID: info.KeyID, PublicKey: info.PublicKey, CreatedAt: info.CreatedAt, ExpiresAt: info.ExpiresAt}
	if err := crypto.VerifyKeyStatement(info.Identity, st, info.Signature); err != nil {
		return nil, fmt.Errorf("%w: %s (%w)", ErrRuntimeKeyInvalid, crypto.Code(err), err)
	}
	pub, err := crypto.ParsePublicKey(info.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %w", ErrRuntimeKeyInvalid, err)
	}
	if !now.Before(info.ExpiresAt) {
		return nil, fmt.Errorf("%w: key %s expired at %s (check this device's clock)", ErrRuntimeKeyInvalid,
			info.KeyID, info.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return &RuntimeKey{ID: info.KeyID, Public: pub, Identity: info.Identity, ExpiresAt: info.ExpiresAt}, nil
}

// FetchRuntimeKey fetches the runtime key of c's server, checks its
// signature and checks its identity against the pin in st: with no pin yet
// it pins the identity (RuntimeKey.NewlyPinned); with another pinned it
// returns an *IdentityChangedError. token may be "".
func FetchRuntimeKey(ctx context.Context, c *Client, st *State, token string, now time.Time) (*RuntimeKey, error) {
	info, err := c.RuntimeKeyInfo(ctx, token)
	if err != nil {
		return nil, sessionError(err)
	}
	rk, err := VerifyRuntimeKey(info, now)
	if err != nil {
		return nil, err
	}
	pins, err := st.loadPins()
	if err != nil {
		return nil, err
	}
	pin, ok := pins.Servers[c.ServerURL()]
	switch {
	case !ok:
		pins.Servers[c.ServerURL()] = RuntimePin{Identity: rk.Identity, PinnedAt: now.UTC()}
		if err := st.savePins(pins); err != nil {
			return nil, fmt.Errorf("pin the runtime identity: %w", err)
		}
		rk.NewlyPinned = true
	case pin.Identity != rk.Identity:
		return nil, &IdentityChangedError{Server: c.ServerURL(), Pinned: pin.Identity, PinnedAt: pin.PinnedAt, Served: rk.Identity}
	}
	return rk, nil
}

// TrustRuntime replaces the pinned runtime identity of c's server by the
// one the server presents now — only when it equals identity, which the
// user got from the operator by another channel. It returns the key and the
// identity pinned before ("" when none was).
func TrustRuntime(ctx context.Context, c *Client, st *State, token, identity string, now time.Time) (*RuntimeKey, string, error) {
	info, err := c.RuntimeKeyInfo(ctx, token)
	if err != nil {
		return nil, "", sessionError(err)
	}
	rk, err := VerifyRuntimeKey(info, now)
	if err != nil {
		return nil, "", err
	}
	if rk.Identity != identity {
		return nil, "", fmt.Errorf("the server presents runtime identity %s, not %s; nothing was pinned", rk.Identity, identity)
	}
	pins, err := st.loadPins()
	if err != nil {
		return nil, "", err
	}
	before := pins.Servers[c.ServerURL()].Identity
	pins.Servers[c.ServerURL()] = RuntimePin{Identity: identity, PinnedAt: now.UTC()}
	if err := st.savePins(pins); err != nil {
		return nil, "", fmt.Errorf("pin the runtime identity: %w", err)
	}
	rk.NewlyPinned = before != identity
	return rk, before, nil
}

// RuntimePin returns the identity pinned for server, if any.
func (s *State) RuntimePin(server string) (RuntimePin, bool, error) {
	pins, err := s.loadPins()
	if err != nil {
		return RuntimePin{}, false, err
	}
	p, ok := pins.Servers[server]
	return p, ok, nil
}

func (s *State) loadPins() (*pinFile, error) {
	p := &pinFile{Version: 1, Servers: map[string]RuntimePin{}}
	path := filepath.Join(s.dir, pinsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read runtime pins: %w", err)
	}
	// A damaged pin file must not turn into "nothing pinned" (which would
	// silently accept any identity): it is an error the user resolves.
	if err := json.Unmarshal(b, p); err != nil || p.Version != 1 {
		return nil, fmt.Errorf("the runtime pin file %s is damaged or of an unknown version; "+
			"fix or remove it (removing it trusts the next identity seen)", path)
	}
	if p.Servers == nil {
		p.Servers = map[string]RuntimePin{}
	}
	return p, nil
}

func (s *State) savePins(p *pinFile) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFile(pinsFile, append(b, '\n'))
}

// writeFile replaces name in the state directory atomically, mode 0600.
func (s *State) writeFile(name string, b []byte) error {
	if err := s.ensureDir(); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, "."+name+"-*.tmp") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(fileMode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, name))
	}
	return err
}
