package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Runtime identity (docs/crypto.md §11). The runtime supervisor holds a
// long-term Ed25519 identity key and signs each short-lived HPKE key it
// publishes. Clients pin the identity on first use and check the signature
// on every grant, so a control plane that relays the key cannot substitute
// one of its own.

const (
	kindIdentityPrivate byte = 0x05
	kindIdentityPublic  byte = 0x06
)

// IdentityKey is a runtime's long-term signing key. It prints as redacted.
type IdentityKey struct {
	sk ed25519.PrivateKey
}

// GenerateIdentity makes a new identity key.
func GenerateIdentity() (*IdentityKey, error) {
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return &IdentityKey{sk: sk}, nil
}

// Record returns the identity record 0x05 ‖ seed, in text form, for the
// runtime's key file. The caller keeps it secret.
func (k *IdentityKey) Record() string {
	return EncodeText(append([]byte{kindIdentityPrivate}, k.sk.Seed()...))
}

// ParseIdentity reads a Record.
func ParseIdentity(text string) (*IdentityKey, error) {
	b, err := DecodeText(strings.TrimSpace(text))
	if err != nil {
		return nil, err
	}
	defer clear(b)
	if len(b) == 0 || b[0] != kindIdentityPrivate {
		return nil, fmt.Errorf("%w: not an identity record", ErrUnknownVersion)
	}
	if len(b) != 1+ed25519.SeedSize {
		return nil, fmt.Errorf("%w: identity record is %d bytes, want %d", ErrMalformed, len(b), 1+ed25519.SeedSize)
	}
	return &IdentityKey{sk: ed25519.NewKeyFromSeed(b[1:])}, nil
}

// Public returns the identity's public record 0x06 ‖ key, in text form.
func (k *IdentityKey) Public() string {
	return EncodeText(append([]byte{kindIdentityPublic}, k.sk.Public().(ed25519.PublicKey)...))
}

// Wipe zeroes the key.
func (k *IdentityKey) Wipe() { clear(k.sk) }

func (*IdentityKey) String() string               { return redacted }
func (*IdentityKey) GoString() string             { return "crypto.IdentityKey" + redacted }
func (*IdentityKey) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (*IdentityKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (*IdentityKey) Format(f fmt.State, _ rune)   { fmt.Fprint(f, redacted) }

// KeyStatement is what an identity signs about a runtime key.
type KeyStatement struct {
	KeyID     string
	PublicKey string // the public key record, text form
	CreatedAt time.Time
	ExpiresAt time.Time
}

// bytes is the signed message: a fixed label and the fields, one per line.
// Key ids and key texts cannot contain a newline (they are validated), so
// the encoding is unambiguous.
func (s KeyStatement) bytes() ([]byte, error) {
	if s.KeyID == "" || strings.ContainsAny(s.KeyID, "\n\x00") || len(s.KeyID) > 128 {
		return nil, fmt.Errorf("%w: key id", ErrMalformed)
	}
	if _, err := ParsePublicKey(s.PublicKey); err != nil {
		return nil, err
	}
	return []byte("polydev runtime key v1\n" + s.KeyID + "\n" + s.PublicKey + "\n" +
		strconv.FormatInt(s.CreatedAt.Unix(), 10) + "\n" + strconv.FormatInt(s.ExpiresAt.Unix(), 10)), nil
}

// Sign signs s.
func (k *IdentityKey) Sign(s KeyStatement) (string, error) {
	msg, err := s.bytes()
	if err != nil {
		return "", err
	}
	return EncodeText(ed25519.Sign(k.sk, msg)), nil
}

// VerifyKeyStatement checks that identity (a Public text) signed s. A wrong
// signature, a statement changed in any field, or a malformed identity is
// ErrOpenFailed or ErrMalformed; the caller must refuse the key.
func VerifyKeyStatement(identity string, s KeyStatement, signature string) error {
	pub, err := DecodeText(identity)
	if err != nil {
		return err
	}
	if len(pub) == 0 || pub[0] != kindIdentityPublic {
		return fmt.Errorf("%w: not an identity public key", ErrUnknownVersion)
	}
	if len(pub) != 1+ed25519.PublicKeySize {
		return fmt.Errorf("%w: identity public key is %d bytes", ErrMalformed, len(pub))
	}
	sig, err := DecodeText(signature)
	if err != nil {
		return err
	}
	msg, err := s.bytes()
	if err != nil {
		return err
	}
	if !ed25519.Verify(ed25519.PublicKey(pub[1:]), msg, sig) {
		return fmt.Errorf("%w: runtime key signature", ErrOpenFailed)
	}
	return nil
}

// ExportRecord returns the private key record (§6.2) so a supervisor can
// hand a runtime key to its sandbox over a private channel. The caller
// wipes the result. Never store or log it.
func (k *PrivateKey) ExportRecord() ([]byte, error) { return k.record() }

// ParsePrivateKeyRecord reads an ExportRecord.
func ParsePrivateKeyRecord(b []byte) (*PrivateKey, error) { return parsePrivateKeyRecord(b) }

// ExportText returns the raw key in text form, for the one place a raw
// conversation key leaves the device: inside a grant sealed to the runtime
// (§11.2). Never store or log the result.
func (k Key) ExportText() (string, error) {
	if !k.Valid() {
		return "", fmt.Errorf("%w: no key", ErrMalformed)
	}
	return EncodeText(k.s.b[:]), nil
}

// KeyFromText reads an ExportText.
func KeyFromText(text string) (Key, error) {
	b, err := DecodeText(text)
	if err != nil {
		return Key{}, err
	}
	defer clear(b)
	return KeyFromBytes(b)
}
