package crypto

import "fmt"

// WrapKey encrypts key under wrapping at ctx (docs/crypto.md §7): a
// symmetric envelope whose plaintext is the 32 raw key bytes.
func WrapKey(wrapping Key, ctx Context, key Key) (string, error) {
	if !key.Valid() {
		return "", fmt.Errorf("%w: empty key to wrap", ErrMalformed)
	}
	return Seal(wrapping, ctx, key.bytes())
}

// UnwrapKey opens a wrapped 256-bit key. A plaintext of any other length is
// ErrMalformed.
func UnwrapKey(wrapping Key, ctx Context, wrapped string) (Key, error) {
	pt, err := Open(wrapping, ctx, wrapped)
	if err != nil {
		return Key{}, err
	}
	defer clear(pt)
	if len(pt) != KeySize {
		return Key{}, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrMalformed, len(pt), KeySize)
	}
	return KeyFromBytes(pt)
}

// WrapPrivateKey encrypts a private key record (§6.2) under wrapping at ctx.
func WrapPrivateKey(wrapping Key, ctx Context, priv *PrivateKey) (string, error) {
	rec, err := priv.record()
	if err != nil {
		return "", err
	}
	defer clear(rec)
	return Seal(wrapping, ctx, rec)
}

// UnwrapPrivateKey opens a wrapped private key record.
func UnwrapPrivateKey(wrapping Key, ctx Context, wrapped string) (*PrivateKey, error) {
	pt, err := Open(wrapping, ctx, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return parsePrivateKeyRecord(pt)
}
