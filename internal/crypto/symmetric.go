package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
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
	// The binary envelope is only a step towards the text: build it in a
	// pooled buffer (it holds ciphertext, nothing secret) to spare an
	// allocation per message.
	bp := sealBuffers.Get().(*[]byte)
	defer sealBuffers.Put(bp)
	b, err := sealAppend((*bp)[:0], key, ctx, plaintext)
	if err != nil {
		return "", err
	}
	*bp = b
	return EncodeText(b), nil
}

var sealBuffers = sync.Pool{New: func() any { return new([]byte) }}

// Open decodes and decrypts the text form of a symmetric envelope in ctx.
func Open(key Key, ctx Context, envelope string) ([]byte, error) {
	b, err := DecodeText(envelope)
	if err != nil {
		return nil, err
	}
	return openBytes(key, ctx, b, true)
}

// SealBytes is Seal without the text encoding.
func SealBytes(key Key, ctx Context, plaintext []byte) ([]byte, error) {
	return sealAppend(make([]byte, 0, minSymmetricSize+len(plaintext)), key, ctx, plaintext)
}

// sealAppend appends the binary envelope to dst.
func sealAppend(dst []byte, key Key, ctx Context, plaintext []byte) ([]byte, error) {
	aad, err := ctx.bytes(kindSymmetric)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	dst = slices.Grow(dst, minSymmetricSize+len(plaintext))
	dst = append(dst, kindSymmetric)
	dst = append(dst, make([]byte, nonceSize)...)
	nonce := dst[len(dst)-nonceSize:]
	rand.Read(nonce)
	return aead.Seal(dst, nonce, plaintext, aad), nil
}

// OpenBytes is Open without the text decoding. It does not modify envelope.
func OpenBytes(key Key, ctx Context, envelope []byte) ([]byte, error) {
	return openBytes(key, ctx, envelope, false)
}

// openBytes decrypts in place, over the envelope's own bytes, when the
// caller owns them (a freshly decoded buffer), saving a copy.
func openBytes(key Key, ctx Context, envelope []byte, inPlace bool) ([]byte, error) {
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
	var dst []byte
	if inPlace {
		dst = ct[:0]
	}
	pt, err := aead.Open(dst, nonce, ct, aad)
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
	if c := key.s.gcm.Load(); c != nil {
		return c.aead, nil
	}
	block, err := aes.NewCipher(key.bytes())
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	key.s.gcm.Store(&gcmCache{aead})
	return aead, nil
}

// CheckEnvelopeText checks that text is the text form of a symmetric
// envelope of at most maxBytes bytes — the shape a server can verify of a
// ciphertext it cannot open (a wrapped key, an encrypted message).
func CheckEnvelopeText(text string, maxBytes int) error {
	if len(text) > (maxBytes+2)/3*4 {
		return fmt.Errorf("%w: envelope longer than %d bytes", ErrMalformed, maxBytes)
	}
	b, err := DecodeText(text)
	if err != nil {
		return err
	}
	_, _, err = parseSymmetric(b)
	return err
}
