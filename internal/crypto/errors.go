package crypto

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them; callers branch with errors.Is and report [Code]. Messages never carry
// key material or plaintext.
var (
	// ErrMalformed: the input cannot be decoded (bad base64, wrong length,
	// invalid context, bad key record).
	ErrMalformed = errors.New("malformed")
	// ErrUnknownVersion: the kind/version byte or the KDF record version is
	// not one this implementation knows in that position.
	ErrUnknownVersion = errors.New("unknown version")
	// ErrUnsupportedSuite: the HPKE suite is not accepted, or does not match
	// the key.
	ErrUnsupportedSuite = errors.New("unsupported suite")
	// ErrUnsupportedKDF: the KDF record names an unknown algorithm.
	ErrUnsupportedKDF = errors.New("unsupported kdf")
	// ErrInvalidKDFParams: the KDF record is structurally wrong or above the
	// maximums.
	ErrInvalidKDFParams = errors.New("invalid kdf params")
	// ErrWeakKDFParams: the KDF record is below the client's minimum
	// (downgrade protection).
	ErrWeakKDFParams = errors.New("weak kdf params")
	// ErrOpenFailed: authentication failed — wrong key, wrong context, or a
	// tampered or truncated ciphertext.
	ErrOpenFailed = errors.New("open failed")
)

var codes = []struct {
	err  error
	code string
}{
	{ErrMalformed, "malformed"},
	{ErrUnknownVersion, "unknown_version"},
	{ErrUnsupportedSuite, "unsupported_suite"},
	{ErrUnsupportedKDF, "unsupported_kdf"},
	{ErrInvalidKDFParams, "invalid_kdf_params"},
	{ErrWeakKDFParams, "weak_kdf_params"},
	{ErrOpenFailed, "open_failed"},
}

// Code returns the stable error code of docs/crypto.md §2.2 for err ("" for
// nil, "internal" for an error that is not one of this package's).
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}
