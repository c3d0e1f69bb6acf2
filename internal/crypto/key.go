package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// KeySize is the size of every symmetric key in the hierarchy.
const KeySize = 32

const redacted = "[REDACTED]"

// Key is a 256-bit secret key: a master, wrap, account or conversation key.
// The zero Key is empty and unusable. Copies of a Key share one buffer, so
// Wipe on any copy zeroes and disables them all. A Key prints as [REDACTED]
// through fmt, log/slog and encoding/json.
type Key struct{ s *keyState }

type keyState struct {
	b     [KeySize]byte
	wiped bool
	// gcm is the AES-GCM instance of this key, made on first use and kept,
	// so that a key sealing many chunks expands its AES key schedule once
	// instead of leaving one copy per call in freed memory.
	gcm atomic.Pointer[gcmCache]
}

type gcmCache struct{ aead cipher.AEAD }

// NewKey returns a fresh random key.
func NewKey() Key {
	k := Key{s: new(keyState)}
	rand.Read(k.s.b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
}

// KeyFromBytes copies 32 raw bytes into a new Key.
func KeyFromBytes(b []byte) (Key, error) {
	if len(b) != KeySize {
		return Key{}, fmt.Errorf("%w: key is %d bytes, want %d", ErrMalformed, len(b), KeySize)
	}
	k := Key{s: new(keyState)}
	copy(k.s.b[:], b)
	return k, nil
}

// Valid reports whether k holds key material (it is neither the zero Key
// nor wiped).
func (k Key) Valid() bool { return k.s != nil && !k.s.wiped }

// Wipe zeroes the key in place and makes it unusable. It is safe on the
// zero Key and safe twice.
func (k Key) Wipe() {
	if k.s != nil {
		clear(k.s.b[:])
		k.s.wiped = true
		k.s.gcm.Store(nil)
	}
}

// Equal reports whether two valid keys hold the same bytes (not constant
// time; for tests and assertions, never for authentication).
func (k Key) Equal(o Key) bool {
	return k.Valid() && o.Valid() && k.s.b == o.s.b
}

// bytes returns the key material, or nil for an invalid key; every user
// checks Valid first.
func (k Key) bytes() []byte {
	if !k.Valid() {
		return nil
	}
	return k.s.b[:]
}

func (Key) String() string               { return redacted }
func (Key) GoString() string             { return "crypto.Key" + redacted }
func (Key) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (k Key) Format(f fmt.State, _ rune) { fmt.Fprint(f, redacted) }

// AuthKey is the key a client sends to the server at registration and
// login. It is a secret (the server hashes it like a password), so it prints
// as redacted; Text gives the base64 form for the request body.
type AuthKey struct{ Key }

// Text returns the base64 form sent to the server.
func (a AuthKey) Text() (string, error) {
	if !a.Valid() {
		return "", fmt.Errorf("%w: empty or wiped auth key", ErrMalformed)
	}
	return EncodeText(a.bytes()), nil
}
