package crypto

// Test-only access to raw material, for vectors and interop checks.

func (k Key) RawForTest() []byte { return k.bytes() }

func (k *PrivateKey) RecordForTest() ([]byte, error) { return k.record() }

func ParsePrivateKeyRecordForTest(b []byte) (*PrivateKey, error) { return parsePrivateKeyRecord(b) }

func ContextBytesForTest(c Context, kind byte) ([]byte, error) { return c.bytes(kind) }

// NewGCMForTest is the AES-GCM instance the envelopes use, for public vectors.
func NewGCMForTest(key []byte) (interface {
	Seal(dst, nonce, plaintext, aad []byte) []byte
	Open(dst, nonce, ciphertext, aad []byte) ([]byte, error)
}, error) {
	k, err := KeyFromBytes(key)
	if err != nil {
		return nil, err
	}
	return newGCM(k)
}

var LowOrderX25519ForTest = lowOrderX25519
