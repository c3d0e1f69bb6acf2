package crypto

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// The server's side of authentication (docs/crypto.md §3.5). The client
// sends its auth key — 256 bits derived from the password; the server keeps
// only a salted Argon2id hash of it, so a copy of the database cannot be
// replayed to log in. The input already carries 256 bits of entropy, so the
// hash's cost is about the server's throughput, not guessing resistance:
// moderate parameters (OWASP's Argon2id baseline) are enough.

// Server-side hash parameters.
const (
	authHashMemoryKiB = 19 * 1024
	authHashTime      = 2
	authHashThreads   = 1
	authHashSaltSize  = 16
	authHashSize      = 32
)

// AuthHashAlgo names the parameters of a stored hash, so they can change
// without invalidating old rows.
var authHashAlgo = fmt.Sprintf("argon2id$v=19$m=%d,t=%d,p=%d", authHashMemoryKiB, authHashTime, authHashThreads)

// HashAuthKey hashes the base64 auth key a client sent, under a fresh salt,
// and returns the hash, the salt and the algorithm string to store with
// them. A text that is not a base64 256-bit key is ErrMalformed.
func HashAuthKey(authKeyText string) (hash, salt []byte, algo string, err error) {
	k, err := decodeAuthKey(authKeyText)
	if err != nil {
		return nil, nil, "", err
	}
	defer clear(k)
	salt = make([]byte, authHashSaltSize)
	rand.Read(salt)
	return argon2.IDKey(k, salt, authHashTime, authHashMemoryKiB, authHashThreads, authHashSize), salt, authHashAlgo, nil
}

// VerifyAuthKey reports whether authKeyText matches a stored hash, in time
// that does not depend on where they differ. It does the full hash even for
// a malformed key (the caller answers both the same way), so a wrong key
// and a garbled one cost the same. An algo string this build cannot compute
// is ErrUnsupportedKDF.
func VerifyAuthKey(authKeyText string, hash, salt []byte, algo string) (bool, error) {
	m, t, p, err := parseAuthHashAlgo(algo)
	if err != nil {
		return false, err
	}
	k, kerr := decodeAuthKey(authKeyText)
	if kerr != nil {
		k = make([]byte, KeySize) // same work, certain mismatch below
	}
	defer clear(k)
	got := argon2.IDKey(k, salt, t, m, p, uint32(max(len(hash), 1)))
	ok := subtle.ConstantTimeCompare(got, hash) == 1 && kerr == nil
	return ok, nil
}

// DummyAuthHash returns a hash, salt and algo that no auth key matches, for
// verifying logins of unknown accounts at the same cost as real ones.
func DummyAuthHash() (hash, salt []byte, algo string) {
	hash, salt, algo, _ = HashAuthKey(EncodeText(NewKey().bytes()))
	return hash, salt, algo
}

func decodeAuthKey(text string) ([]byte, error) {
	k, err := DecodeText(text)
	if err != nil || len(k) != KeySize {
		clear(k)
		return nil, fmt.Errorf("%w: auth key must be base64 of %d bytes", ErrMalformed, KeySize)
	}
	return k, nil
}

// parseAuthHashAlgo reads "argon2id$v=19$m=M,t=T,p=P", refusing anything
// outside sane bounds (a corrupted row must not make the server allocate
// gigabytes).
func parseAuthHashAlgo(algo string) (m, t uint32, p uint8, err error) {
	rest, ok := strings.CutPrefix(algo, "argon2id$v=19$")
	var pp uint32
	if ok {
		_, err = fmt.Sscanf(rest, "m=%d,t=%d,p=%d", &m, &t, &pp)
	}
	if !ok || err != nil || fmt.Sprintf("m=%d,t=%d,p=%d", m, t, pp) != rest ||
		m < 8*1024 || m > 1024*1024 || t < 1 || t > 16 || pp < 1 || pp > 16 {
		return 0, 0, 0, fmt.Errorf("%w: stored auth hash algorithm %q", ErrUnsupportedKDF, algo)
	}
	return m, t, uint8(pp), nil
}

// FakeKDFParams is what prelogin answers for an email with no account: the
// default record's shape, with a salt derived from a server secret and the
// email, so the answer is the same every time for that email and looks like
// a real one. secret must be at least 32 random bytes and stay constant.
func FakeKDFParams(secret []byte, email string) KDFParams {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("polydev/v1/prelogin-salt\x00"))
	mac.Write([]byte(email))
	p := DefaultKDFParams()
	p.Salt = mac.Sum(nil) // 32 bytes, the default salt size
	return p
}
