package crypto

import "fmt"

// CheckSealedText checks that text is the text form of a sealed envelope
// (docs/crypto.md §6) of at most maxBytes bytes, and returns its suite —
// the shape a server can verify of a ciphertext sealed to someone else's
// key (a provider token sealed to its user). It does no cryptography.
func CheckSealedText(text string, maxBytes int) (*Suite, error) {
	if len(text) > (maxBytes+2)/3*4 {
		return nil, fmt.Errorf("%w: envelope longer than %d bytes", ErrMalformed, maxBytes)
	}
	b, err := DecodeText(text)
	if err != nil {
		return nil, err
	}
	suite, _, _, err := parseSealed(b)
	return suite, err
}
