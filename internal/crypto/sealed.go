package crypto

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
)

// Suite is an HPKE ciphersuite accepted for sealed envelopes
// (docs/crypto.md §6.1).
type Suite struct {
	Name string
	KEM  uint16
	KDF  uint16
	AEAD uint16
	nenc int // encapsulated key size
	npk  int // serialized public key size
	nsk  int // serialized private key size
	kem  func() hpke.KEM
}

var (
	// SuiteXWing is the default: X-Wing (ML-KEM-768 + X25519), HKDF-SHA256,
	// AES-256-GCM. Post-quantum.
	SuiteXWing = &Suite{Name: "xwing", KEM: 0x647a, KDF: 0x0001, AEAD: 0x0002, nenc: 1120, npk: 1216, nsk: 32, kem: hpke.MLKEM768X25519}
	// SuiteX25519 is DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
	SuiteX25519 = &Suite{Name: "x25519", KEM: 0x0020, KDF: 0x0001, AEAD: 0x0002, nenc: 32, npk: 32, nsk: 32, kem: x25519KEM}

	// Suites lists every accepted suite, the default first.
	Suites = []*Suite{SuiteXWing, SuiteX25519}
)

// DefaultSuite is the suite new key pairs use.
var DefaultSuite = SuiteXWing

func suiteByKEM(id uint16) (*Suite, error) {
	for _, s := range Suites {
		if s.KEM == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: kem 0x%04x", ErrUnsupportedSuite, id)
}

func (s *Suite) String() string { return s.Name }

// PublicKey is a recipient's public key for sealed envelopes.
type PublicKey struct {
	suite *Suite
	pk    hpke.PublicKey
}

// PrivateKey is a recipient's private key. It prints as redacted. The
// standard library holds the key material; Wipe drops this value's reference
// so the memory is released to the collector (see docs/crypto.md §8).
type PrivateKey struct {
	suite *Suite
	sk    hpke.PrivateKey
}

// GenerateKeyPair makes a new key pair for suite.
func GenerateKeyPair(suite *Suite) (*PrivateKey, error) {
	sk, err := suite.kem().GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", suite.Name, err)
	}
	return &PrivateKey{suite: suite, sk: sk}, nil
}

// Suite returns the key's suite.
func (k *PrivateKey) Suite() *Suite { return k.suite }

// Public returns the matching public key.
func (k *PrivateKey) Public() *PublicKey {
	return &PublicKey{suite: k.suite, pk: k.sk.PublicKey()}
}

// Wipe drops the key. The PrivateKey is unusable afterwards.
func (k *PrivateKey) Wipe() { k.sk = nil }

func (*PrivateKey) String() string               { return redacted }
func (*PrivateKey) GoString() string             { return "crypto.PrivateKey" + redacted }
func (*PrivateKey) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (*PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (*PrivateKey) Format(f fmt.State, _ rune)   { fmt.Fprint(f, redacted) }

// record returns the private key record 0x04 ‖ kem_id ‖ sk (§6.2). The
// caller wipes it.
func (k *PrivateKey) record() ([]byte, error) {
	if k.sk == nil {
		return nil, fmt.Errorf("%w: wiped private key", ErrMalformed)
	}
	sk, err := k.sk.Bytes()
	if err != nil {
		return nil, fmt.Errorf("serialize private key: %w", err)
	}
	// Not wiped here: for some KEMs Bytes returns the key's own storage.
	b := make([]byte, 0, 3+len(sk))
	b = append(b, kindPrivateKey)
	b = binary.BigEndian.AppendUint16(b, k.suite.KEM)
	return append(b, sk...), nil
}

// parsePrivateKeyRecord is the inverse of record.
func parsePrivateKeyRecord(b []byte) (*PrivateKey, error) {
	suite, key, err := parseKeyRecord(b, kindPrivateKey, "private")
	if err != nil {
		return nil, err
	}
	if len(key) != suite.nsk {
		return nil, fmt.Errorf("%w: %s private key is %d bytes, want %d", ErrMalformed, suite.Name, len(key), suite.nsk)
	}
	sk, err := suite.kem().NewPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s private key rejected", ErrMalformed, suite.Name)
	}
	return &PrivateKey{suite: suite, sk: sk}, nil
}

func parseKeyRecord(b []byte, kind byte, what string) (*Suite, []byte, error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: empty %s key record", ErrMalformed, what)
	}
	if b[0] != kind {
		return nil, nil, fmt.Errorf("%w: record kind 0x%02x, want %s key 0x%02x", ErrUnknownVersion, b[0], what, kind)
	}
	if len(b) < 3 {
		return nil, nil, fmt.Errorf("%w: %s key record too short", ErrMalformed, what)
	}
	suite, err := suiteByKEM(binary.BigEndian.Uint16(b[1:3]))
	if err != nil {
		return nil, nil, err
	}
	return suite, b[3:], nil
}

// Suite returns the key's suite.
func (k *PublicKey) Suite() *Suite { return k.suite }

// Bytes returns the public key record 0x03 ‖ kem_id ‖ pk (§6.2).
func (k *PublicKey) Bytes() []byte {
	pk := k.pk.Bytes()
	b := make([]byte, 0, 3+len(pk))
	b = append(b, kindPublicKey)
	b = binary.BigEndian.AppendUint16(b, k.suite.KEM)
	return append(b, pk...)
}

// String returns the base64 text form of the public key record.
func (k *PublicKey) String() string { return EncodeText(k.Bytes()) }

// ParsePublicKey decodes the text form of a public key record.
func ParsePublicKey(text string) (*PublicKey, error) {
	b, err := DecodeText(text)
	if err != nil {
		return nil, err
	}
	return ParsePublicKeyBytes(b)
}

// ParsePublicKeyBytes decodes a binary public key record.
func ParsePublicKeyBytes(b []byte) (*PublicKey, error) {
	suite, key, err := parseKeyRecord(b, kindPublicKey, "public")
	if err != nil {
		return nil, err
	}
	if len(key) != suite.npk {
		return nil, fmt.Errorf("%w: %s public key is %d bytes, want %d", ErrMalformed, suite.Name, len(key), suite.npk)
	}
	// The X25519 share is the whole key, or X-Wing's last 32 bytes.
	if err := checkX25519Public(key[len(key)-32:]); err != nil {
		return nil, fmt.Errorf("%w: %s public key: %v", ErrMalformed, suite.Name, err)
	}
	pk, err := suite.kem().NewPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s public key rejected", ErrMalformed, suite.Name)
	}
	return &PublicKey{suite: suite, pk: pk}, nil
}

const sealedHeaderSize = 7 // kind ‖ kem_id ‖ kdf_id ‖ aead_id

// sealedInfo is the per-purpose HPKE info string (§6).
func sealedInfo(ctx Context) []byte {
	return []byte("polydev/v1/sealed/" + ctx.Table + "/" + ctx.Field)
}

// SealTo seals plaintext to pub in ctx (docs/crypto.md §6) and returns the
// base64 text form of the sealed envelope.
func SealTo(pub *PublicKey, ctx Context, plaintext []byte) (string, error) {
	b, err := SealToBytes(pub, ctx, plaintext)
	if err != nil {
		return "", err
	}
	return EncodeText(b), nil
}

// SealToBytes is SealTo without the text encoding.
func SealToBytes(pub *PublicKey, ctx Context, plaintext []byte) ([]byte, error) {
	aad, err := ctx.bytes(kindSealed)
	if err != nil {
		return nil, err
	}
	s := pub.suite
	enc, sender, err := hpke.NewSender(pub.pk, hpke.HKDFSHA256(), hpke.AES256GCM(), sealedInfo(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: hpke %s encapsulation to this key failed", ErrMalformed, s.Name)
	}
	out := make([]byte, 0, sealedHeaderSize+len(enc)+len(plaintext)+tagSize)
	out = append(out, kindSealed)
	out = binary.BigEndian.AppendUint16(out, s.KEM)
	out = binary.BigEndian.AppendUint16(out, s.KDF)
	out = binary.BigEndian.AppendUint16(out, s.AEAD)
	out = append(out, enc...)
	ct, err := sender.Seal(aad, plaintext)
	if err != nil {
		return nil, fmt.Errorf("hpke %s seal: %w", s.Name, err)
	}
	return append(out, ct...), nil
}

// OpenSealed decodes and opens the text form of a sealed envelope with priv
// in ctx.
func OpenSealed(priv *PrivateKey, ctx Context, envelope string) ([]byte, error) {
	b, err := DecodeText(envelope)
	if err != nil {
		return nil, err
	}
	return OpenSealedBytes(priv, ctx, b)
}

// OpenSealedBytes is OpenSealed without the text decoding.
func OpenSealedBytes(priv *PrivateKey, ctx Context, envelope []byte) ([]byte, error) {
	suite, enc, ct, err := parseSealed(envelope)
	if err != nil {
		return nil, err
	}
	aad, err := ctx.bytes(kindSealed)
	if err != nil {
		return nil, err
	}
	if priv == nil || priv.sk == nil {
		return nil, fmt.Errorf("%w: no private key", ErrMalformed)
	}
	if priv.suite != suite {
		return nil, fmt.Errorf("%w: envelope is sealed with %s, key is %s", ErrUnsupportedSuite, suite.Name, priv.suite.Name)
	}
	r, err := hpke.NewRecipient(enc, priv.sk, hpke.HKDFSHA256(), hpke.AES256GCM(), sealedInfo(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: %s decapsulation", ErrOpenFailed, suite.Name)
	}
	pt, err := r.Open(aad, ct)
	if err != nil {
		return nil, fmt.Errorf("%w: sealed envelope", ErrOpenFailed)
	}
	return pt, nil
}

// parseSealed splits a sealed envelope into its suite, encapsulated key and
// ciphertext, refusing unknown kinds and suites before any cryptography.
func parseSealed(b []byte) (suite *Suite, enc, ct []byte, err error) {
	if len(b) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: empty envelope", ErrMalformed)
	}
	if b[0] != kindSealed {
		return nil, nil, nil, fmt.Errorf("%w: envelope kind 0x%02x, want sealed 0x02", ErrUnknownVersion, b[0])
	}
	if len(b) < sealedHeaderSize {
		return nil, nil, nil, fmt.Errorf("%w: sealed envelope header truncated", ErrMalformed)
	}
	kem, kdf, aead := binary.BigEndian.Uint16(b[1:]), binary.BigEndian.Uint16(b[3:]), binary.BigEndian.Uint16(b[5:])
	for _, s := range Suites {
		if s.KEM == kem && s.KDF == kdf && s.AEAD == aead {
			suite = s
		}
	}
	if suite == nil {
		return nil, nil, nil, fmt.Errorf("%w: kem 0x%04x kdf 0x%04x aead 0x%04x", ErrUnsupportedSuite, kem, kdf, aead)
	}
	if len(b) < sealedHeaderSize+suite.nenc+tagSize {
		return nil, nil, nil, fmt.Errorf("%w: %s envelope is %d bytes, shorter than %d", ErrMalformed, suite.Name, len(b), sealedHeaderSize+suite.nenc+tagSize)
	}
	return suite, b[sealedHeaderSize : sealedHeaderSize+suite.nenc], b[sealedHeaderSize+suite.nenc:], nil
}

func x25519KEM() hpke.KEM { return hpke.DHKEM(ecdh.X25519()) }

// lowOrderX25519 are the canonical encodings of the points of small order
// (RFC 7748 §6.1; docs/crypto.md §6.2): with any of them as a public key the
// shared secret is all zeros, so nothing sealed to it would be secret.
var lowOrderX25519 = [][32]byte{
	{},
	{1},
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
		0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
		0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
}

// checkX25519Public refuses a non-canonical or small-order X25519 public
// key: the encoding must be below p = 2^255 - 19 with the top bit clear, so
// every key has exactly one encoding, and must not be a point of small
// order.
func checkX25519Public(u []byte) error {
	if u[31]&0x80 != 0 {
		return errors.New("x25519 share has the top bit set")
	}
	geP := u[31] == 0x7f && u[0] >= 0xed
	for i := 1; i < 31 && geP; i++ {
		geP = u[i] == 0xff
	}
	if geP {
		return errors.New("x25519 share is not below 2^255 - 19")
	}
	for _, lo := range lowOrderX25519 {
		if [32]byte(u) == lo {
			return errors.New("x25519 share is a point of small order")
		}
	}
	return nil
}

// CheckSealedText checks that text is the text form of a sealed envelope of
// at most maxBytes bytes, with a suite this implementation accepts — the
// shape a server can verify of a grant or a sealed credential it cannot
// open.
func CheckSealedText(text string, maxBytes int) error {
	if len(text) > (maxBytes+2)/3*4 {
		return fmt.Errorf("%w: envelope longer than %d bytes", ErrMalformed, maxBytes)
	}
	b, err := DecodeText(text)
	if err != nil {
		return err
	}
	_, _, _, err = parseSealed(b)
	return err
}
