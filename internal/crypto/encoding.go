package crypto

import (
	"encoding/base64"
	"fmt"
)

// EncodeText is the text form of binary values: standard base64 with padding.
func EncodeText(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// DecodeText decodes strict base64: it accepts s only if re-encoding the
// result gives s back, which rules out whitespace, line breaks (which
// encoding/base64 would otherwise skip), missing padding and non-zero pad
// bits.
func DecodeText(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodedLen(len(b)) != len(s) {
		return nil, fmt.Errorf("%w: invalid base64", ErrMalformed)
	}
	return b, nil
}
