package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
)

// Kind bytes (docs/crypto.md §2.1).
const (
	kindSymmetric  byte = 0x01
	kindSealed     byte = 0x02
	kindPublicKey  byte = 0x03
	kindPrivateKey byte = 0x04
)

const (
	nonceSize = 12
	tagSize   = 16
	// minSymmetricSize is the kind byte, the nonce and the tag of an empty
	// plaintext.
	minSymmetricSize = 1 + nonceSize + tagSize
)

// Seal encrypts plaintext under key into a symmetric envelope bound to ctx
// (docs/crypto.md §5) and returns its base64 text form.
func Seal(key Key, ctx Context, plaintext []byte) (string, error) {
	b, err := SealBytes(key, ctx, plaintext)
	if err != nil {
		return "", err
	}
	return EncodeText(b), nil
}

// Open decodes and decrypts the text form of a symmetric envelope in ctx.
func Open(key Key, ctx Context, envelope string) ([]byte, error) {
	b, err := DecodeText(envelope)
	if err != nil {
		return nil, err
	}
	return OpenBytes(key, ctx, b)
}

// SealBytes is Seal without the text encoding.
func SealBytes(key Key, ctx Context, plaintext []byte) ([]byte, error) {
	aad, err := ctx.bytes(kindSymmetric)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+nonceSize, minSymmetricSize+len(plaintext))
	out[0] = kindSymmetric
	rand.Read(out[1:])
	return aead.Seal(out, out[1:1+nonceSize], plaintext, aad), nil
}

// OpenBytes is Open without the text decoding.
func OpenBytes(key Key, ctx Context, envelope []byte) ([]byte, error) {
	nonce, ct, err := parseSymmetric(envelope)
	if err != nil {
		return nil, err
	}
	aad, err := ctx.bytes(kindSymmetric)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: symmetric envelope", ErrOpenFailed)
	}
	return pt, nil
}

// parseSymmetric splits a symmetric envelope into nonce and ciphertext‖tag.
func parseSymmetric(b []byte) (nonce, ct []byte, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: empty envelope", ErrMalformed)
	}
	if b[0] != kindSymmetric {
		return nil, nil, fmt.Errorf("%w: envelope kind 0x%02x, want symmetric 0x01", ErrUnknownVersion, b[0])
	}
	if len(b) < minSymmetricSize {
		return nil, nil, fmt.Errorf("%w: symmetric envelope is %d bytes, shorter than %d", ErrMalformed, len(b), minSymmetricSize)
	}
	return b[1 : 1+nonceSize], b[1+nonceSize:], nil
}

func newGCM(key Key) (cipher.AEAD, error) {
	if !key.Valid() {
		return nil, fmt.Errorf("%w: empty key", ErrMalformed)
	}
	block, err := aes.NewCipher(key.bytes())
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(block)
}
