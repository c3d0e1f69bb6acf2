package crypto

import "fmt"

// SealedTextSuite is CheckSealedText that also returns the envelope's
// suite, so a server can check that a credential was sealed in the suite
// of its user's public key. It does no cryptography.
func SealedTextSuite(text string, maxBytes int) (*Suite, error) {
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
