package crypto

import (
	"bytes"
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// KDF algorithm names as they appear in the KDF record.
const (
	Argon2id     = "argon2id"
	PBKDF2SHA256 = "pbkdf2-sha256"
)

// Bounds of docs/crypto.md §3.3. Below a minimum is ErrWeakKDFParams (the
// client refuses a server that offers weaker parameters); above a maximum is
// ErrInvalidKDFParams (a hostile server cannot make the device allocate
// unbounded memory).
const (
	MinArgon2MemoryKiB   = 64 * 1024
	MaxArgon2MemoryKiB   = 1024 * 1024
	MinArgon2Iterations  = 3
	MaxArgon2Iterations  = 16
	MinArgon2Parallelism = 1
	MaxArgon2Parallelism = 16
	MinPBKDF2Iterations  = 600_000
	MaxPBKDF2Iterations  = 10_000_000
	// MaxArgon2Cost bounds memory_kib × iterations (1 GiB × 3 passes), so
	// the largest record a client accepts costs seconds, not minutes.
	MaxArgon2Cost = 3 * 1024 * 1024
	// MaxKDFRecordSize bounds the JSON record itself.
	MaxKDFRecordSize = 1024
	MinSaltSize      = 16
	MaxSaltSize      = 64
	DefaultSaltSize  = 32
	MaxPasswordBytes = 4096
)

// KDFParams is the version-1 KDF record (docs/crypto.md §3.1). Build one with
// [DefaultKDFParams] or [DefaultPBKDF2Params], or [ParseKDFParams] it from
// the JSON a server returned; ParseKDFParams enforces the bounds.
type KDFParams struct {
	Algorithm   string // Argon2id or PBKDF2SHA256
	Salt        []byte
	MemoryKiB   uint32 // Argon2id only
	Iterations  uint32
	Parallelism uint8 // Argon2id only
}

// DefaultKDFParams returns the default record — Argon2id, 64 MiB, 3
// iterations, parallelism 4 — with a fresh random salt.
func DefaultKDFParams() KDFParams {
	return KDFParams{Algorithm: Argon2id, Salt: randomSalt(), MemoryKiB: 64 * 1024, Iterations: 3, Parallelism: 4}
}

// DefaultPBKDF2Params returns the PBKDF2-SHA256 record at 600,000
// iterations with a fresh random salt.
func DefaultPBKDF2Params() KDFParams {
	return KDFParams{Algorithm: PBKDF2SHA256, Salt: randomSalt(), Iterations: MinPBKDF2Iterations}
}

func randomSalt() []byte {
	s := make([]byte, DefaultSaltSize)
	rand.Read(s)
	return s
}

// Validate applies the bounds of §3.3 to an already-built record.
func (p KDFParams) Validate() error {
	if n := len(p.Salt); n < MinSaltSize || n > MaxSaltSize {
		return fmt.Errorf("%w: salt is %d bytes, want %d-%d", ErrInvalidKDFParams, n, MinSaltSize, MaxSaltSize)
	}
	switch p.Algorithm {
	case Argon2id:
		if err := bound("memory_kib", int64(p.MemoryKiB), MinArgon2MemoryKiB, MaxArgon2MemoryKiB); err != nil {
			return err
		}
		if err := bound("iterations", int64(p.Iterations), MinArgon2Iterations, MaxArgon2Iterations); err != nil {
			return err
		}
		if err := bound("parallelism", int64(p.Parallelism), MinArgon2Parallelism, MaxArgon2Parallelism); err != nil {
			return err
		}
		if uint64(p.MemoryKiB)*uint64(p.Iterations) > MaxArgon2Cost {
			return fmt.Errorf("%w: memory_kib × iterations above the maximum %d", ErrInvalidKDFParams, MaxArgon2Cost)
		}
		return nil
	case PBKDF2SHA256:
		if p.MemoryKiB != 0 || p.Parallelism != 0 {
			return fmt.Errorf("%w: pbkdf2-sha256 takes no memory_kib or parallelism", ErrInvalidKDFParams)
		}
		return bound("iterations", int64(p.Iterations), MinPBKDF2Iterations, MaxPBKDF2Iterations)
	default:
		return fmt.Errorf("%w: %q", ErrUnsupportedKDF, p.Algorithm)
	}
}

func bound(name string, v, lo, hi int64) error {
	if v > hi {
		return fmt.Errorf("%w: %s %d above the maximum %d", ErrInvalidKDFParams, name, v, hi)
	}
	if v < lo {
		return fmt.Errorf("%w: %s %d below the minimum %d", ErrWeakKDFParams, name, v, lo)
	}
	return nil
}

var kdfMembers = map[string][]string{
	Argon2id:     {"algorithm", "iterations", "memory_kib", "parallelism", "salt", "version"},
	PBKDF2SHA256: {"algorithm", "iterations", "salt", "version"},
}

// ParseKDFParams decodes and checks a KDF record, following the rules of
// docs/crypto.md §3.1 in order. A record below the minimums is
// ErrWeakKDFParams: the caller must refuse to derive anything from it.
func ParseKDFParams(data []byte) (KDFParams, error) {
	if len(data) > MaxKDFRecordSize || !utf8.Valid(data) {
		return KDFParams{}, fmt.Errorf("%w: record must be UTF-8 of at most %d bytes", ErrInvalidKDFParams, MaxKDFRecordSize)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return KDFParams{}, fmt.Errorf("%w: not a JSON object", ErrInvalidKDFParams)
	}
	version, ok := jsonNumber(m["version"])
	if !ok {
		return KDFParams{}, fmt.Errorf("%w: version missing or not a number", ErrInvalidKDFParams)
	}
	if version != 1 {
		return KDFParams{}, fmt.Errorf("%w: kdf record version %v", ErrUnknownVersion, version)
	}
	var alg string
	if err := json.Unmarshal(m["algorithm"], &alg); err != nil || !isJSONString(m["algorithm"]) {
		return KDFParams{}, fmt.Errorf("%w: algorithm missing or not a string", ErrInvalidKDFParams)
	}
	want, ok := kdfMembers[alg]
	if !ok {
		return KDFParams{}, fmt.Errorf("%w: %q", ErrUnsupportedKDF, alg)
	}
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return KDFParams{}, fmt.Errorf("%w: %s record must have exactly the members %v", ErrInvalidKDFParams, alg, want)
	}
	var salt64 string
	if !isJSONString(m["salt"]) || json.Unmarshal(m["salt"], &salt64) != nil {
		return KDFParams{}, fmt.Errorf("%w: salt is not a string", ErrInvalidKDFParams)
	}
	salt, err := DecodeText(salt64)
	if err != nil || len(salt) < MinSaltSize || len(salt) > MaxSaltSize {
		return KDFParams{}, fmt.Errorf("%w: salt must be base64 of %d-%d bytes", ErrInvalidKDFParams, MinSaltSize, MaxSaltSize)
	}
	p := KDFParams{Algorithm: alg, Salt: salt}
	nums := map[string]float64{}
	for _, name := range want {
		if name == "algorithm" || name == "salt" || name == "version" {
			continue
		}
		v, ok := jsonNumber(m[name])
		if !ok || math.IsInf(v, 0) || v != math.Trunc(v) {
			return KDFParams{}, fmt.Errorf("%w: %s must be an integer", ErrInvalidKDFParams, name)
		}
		nums[name] = v
	}
	// Check bounds on the float values first so that huge or negative
	// numbers never wrap when narrowed.
	check := func(name string, lo, hi float64) error {
		v := nums[name]
		if v > hi {
			return fmt.Errorf("%w: %s %s above the maximum %v", ErrInvalidKDFParams, name, strconv.FormatFloat(v, 'f', -1, 64), hi)
		}
		if v < lo {
			return fmt.Errorf("%w: %s %s below the minimum %v", ErrWeakKDFParams, name, strconv.FormatFloat(v, 'f', -1, 64), lo)
		}
		return nil
	}
	switch alg {
	case Argon2id:
		for _, c := range []struct {
			name   string
			lo, hi float64
		}{
			{"memory_kib", MinArgon2MemoryKiB, MaxArgon2MemoryKiB},
			{"iterations", MinArgon2Iterations, MaxArgon2Iterations},
			{"parallelism", MinArgon2Parallelism, MaxArgon2Parallelism},
		} {
			if err := check(c.name, c.lo, c.hi); err != nil {
				return KDFParams{}, err
			}
		}
		p.MemoryKiB, p.Iterations, p.Parallelism = uint32(nums["memory_kib"]), uint32(nums["iterations"]), uint8(nums["parallelism"])
		if err := p.Validate(); err != nil { // the cost bound
			return KDFParams{}, err
		}
	case PBKDF2SHA256:
		if err := check("iterations", MinPBKDF2Iterations, MaxPBKDF2Iterations); err != nil {
			return KDFParams{}, err
		}
		p.Iterations = uint32(nums["iterations"])
	}
	return p, nil
}

func isJSONString(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '"'
}

// jsonNumber reads a JSON number by value, so "3" and "3.0" agree, as they
// do for JavaScript's JSON.parse; a number too large for a float64 is ±Inf,
// as there.
func jsonNumber(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return 0, false
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(n), 64)
	if err != nil && !isRangeErr(err) {
		return 0, false
	}
	return v, true
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// MarshalJSON writes the canonical record: members in the order of §3.1, no
// whitespace.
func (p KDFParams) MarshalJSON() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	switch p.Algorithm {
	case Argon2id:
		return fmt.Appendf(nil, `{"version":1,"algorithm":"argon2id","salt":%q,"memory_kib":%d,"iterations":%d,"parallelism":%d}`,
			EncodeText(p.Salt), p.MemoryKiB, p.Iterations, p.Parallelism), nil
	case PBKDF2SHA256:
		return fmt.Appendf(nil, `{"version":1,"algorithm":"pbkdf2-sha256","salt":%q,"iterations":%d}`,
			EncodeText(p.Salt), p.Iterations), nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedKDF, p.Algorithm)
	}
}

// UnmarshalJSON is ParseKDFParams, so a record inside a larger JSON document
// is checked as strictly as one on its own.
func (p *KDFParams) UnmarshalJSON(data []byte) error {
	v, err := ParseKDFParams(data)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// DeriveMasterKey stretches a password into the master key (§3.2). It
// validates params first and refuses weak ones before any work is done. The
// normalised copy of the password is wiped before returning; the caller
// wipes password and, once the subkeys exist, the master key.
func DeriveMasterKey(password []byte, params KDFParams) (Key, error) {
	if err := params.Validate(); err != nil {
		return Key{}, err
	}
	pw, err := normalizePassword(password)
	if err != nil {
		return Key{}, err
	}
	defer clear(pw)
	var out []byte
	switch params.Algorithm {
	case Argon2id:
		out = argon2.IDKey(pw, params.Salt, params.Iterations, params.MemoryKiB, params.Parallelism, KeySize)
	case PBKDF2SHA256:
		// crypto/pbkdf2 takes the password as a string: that copy cannot
		// be wiped (docs/crypto.md §8).
		out, err = pbkdf2.Key(sha256.New, string(pw), params.Salt, int(params.Iterations), KeySize)
		if err != nil {
			return Key{}, fmt.Errorf("%w: pbkdf2: %v", ErrInvalidKDFParams, err)
		}
	}
	defer clear(out)
	return KeyFromBytes(out)
}

// normalizePassword returns a new buffer holding UTF-8(NFC(password)),
// never aliasing the caller's (norm.NFC.Bytes may return its input, and the
// caller's buffer must survive the wipe). It refuses invalid UTF-8 and code
// points unassigned in this build's Unicode tables: normalisation of
// assigned characters is stable across Unicode versions, so two
// implementations that both accept a password normalise it identically.
func normalizePassword(password []byte) ([]byte, error) {
	if !utf8.Valid(password) {
		return nil, fmt.Errorf("%w: password is not valid UTF-8", ErrMalformed)
	}
	for _, r := range string(password) {
		if !unicode.In(r, assigned...) || isNoncharacter(r) {
			return nil, fmt.Errorf("%w: password has a code point unassigned in Unicode %s", ErrMalformed, unicode.Version)
		}
	}
	pw := norm.NFC.Append(make([]byte, 0, len(password)+len(password)/2), password...)
	if len(pw) < 1 || len(pw) > MaxPasswordBytes {
		clear(pw)
		return nil, fmt.Errorf("%w: password must be 1-%d bytes", ErrMalformed, MaxPasswordBytes)
	}
	return pw, nil
}

// assigned are the general categories of assigned code points: everything
// but Cn. (unicode.C would not do: Go's table for it includes Cn.)
var assigned = []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z,
	unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs}

// isNoncharacter reports the 66 noncharacters (U+FDD0–U+FDEF and the last
// two code points of every plane), which are Cn.
func isNoncharacter(r rune) bool {
	return r >= 0xFDD0 && r <= 0xFDEF || r&0xFFFE == 0xFFFE
}

// HKDF labels of §3.4.
const (
	authKeyInfo = "polydev/v1/auth-key"
	wrapKeyInfo = "polydev/v1/wrap-key"
)

// DeriveSubkeys derives the auth key (sent to the server) and the wrap key
// (never leaves the device) from the master key (§3.4).
func DeriveSubkeys(master Key) (AuthKey, Key, error) {
	if !master.Valid() {
		return AuthKey{}, Key{}, fmt.Errorf("%w: empty master key", ErrMalformed)
	}
	auth, err := hkdfKey(master, authKeyInfo)
	if err != nil {
		return AuthKey{}, Key{}, err
	}
	wrap, err := hkdfKey(master, wrapKeyInfo)
	if err != nil {
		auth.Wipe()
		return AuthKey{}, Key{}, err
	}
	return AuthKey{auth}, wrap, nil
}

func hkdfKey(master Key, info string) (Key, error) {
	b, err := hkdf.Key(sha256.New, master.bytes(), nil, info, KeySize)
	if err != nil {
		return Key{}, fmt.Errorf("hkdf: %w", err)
	}
	defer clear(b)
	return KeyFromBytes(b)
}
