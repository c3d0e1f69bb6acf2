package crypto

import (
	"fmt"
	"unsafe"
)

// The text form of binary values is standard base64 with padding (RFC 4648
// §4), decoded strictly. It is written out here rather than taken from
// encoding/base64 for speed: envelopes are encoded and decoded on every
// stored or streamed message, and encoding/base64's byte-at-a-time loops
// cost several times the AES-GCM underneath (docs/crypto.md §10). The
// fuzz target FuzzDecodeText checks both directions against
// encoding/base64.

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// b64Pairs maps 12 bits to the two characters that encode them.
var b64Pairs = func() (t [4096][2]byte) {
	for i := range t {
		t[i] = [2]byte{b64Alphabet[i>>6], b64Alphabet[i&63]}
	}
	return t
}()

// b64Values maps a character to its 6-bit value, or 0xff if it is not in the
// alphabet.
var b64Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < 64; i++ {
		t[b64Alphabet[i]] = byte(i)
	}
	return t
}()

// EncodeText is the text form of binary values: standard base64 with padding.
func EncodeText(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	out := make([]byte, (len(b)+2)/3*4)
	o := 0
	i := 0
	for ; i+3 <= len(b); i += 3 {
		src := b[i : i+3 : i+3] // lets the compiler drop the bounds checks
		dst := out[o : o+4 : o+4]
		n := uint(src[0])<<16 | uint(src[1])<<8 | uint(src[2])
		p, q := &b64Pairs[n>>12], &b64Pairs[n&0xfff]
		dst[0], dst[1], dst[2], dst[3] = p[0], p[1], q[0], q[1]
		o += 4
	}
	switch len(b) - i {
	case 1:
		n := uint(b[i]) << 16
		out[o], out[o+1], out[o+2], out[o+3] = b64Alphabet[n>>18], b64Alphabet[n>>12&63], '=', '='
	case 2:
		n := uint(b[i])<<16 | uint(b[i+1])<<8
		out[o], out[o+1], out[o+2], out[o+3] = b64Alphabet[n>>18], b64Alphabet[n>>12&63], b64Alphabet[n>>6&63], '='
	}
	// out is never written again: hand it over as the string without a copy.
	return unsafe.String(&out[0], len(out))
}

// DecodeText decodes strict base64: it accepts s only if EncodeText would
// have produced it — no whitespace or line breaks, padding present and
// exact, pad bits zero.
func DecodeText(s string) ([]byte, error) {
	if len(s)%4 != 0 {
		return nil, errBase64
	}
	if len(s) == 0 {
		return []byte{}, nil
	}
	pad := 0
	if s[len(s)-1] == '=' {
		pad = 1
		if s[len(s)-2] == '=' {
			pad = 2
		}
	}
	out := make([]byte, len(s)/4*3-pad)
	full := len(s) - 4 // the last quantum is handled apart (padding)
	var bad byte
	o := 0
	for i := 0; i < full; i += 4 {
		src := s[i : i+4] // lets the compiler drop the bounds checks
		dst := out[o : o+3 : o+3]
		a, b, c, d := b64Values[src[0]], b64Values[src[1]], b64Values[src[2]], b64Values[src[3]]
		bad |= a | b | c | d
		n := uint(a)<<18 | uint(b)<<12 | uint(c)<<6 | uint(d)
		dst[0], dst[1], dst[2] = byte(n>>16), byte(n>>8), byte(n)
		o += 3
	}
	// 0xff has its top bits set; every valid value is below 64.
	if bad&0xc0 != 0 {
		return nil, errBase64
	}
	a, b := b64Values[s[full]], b64Values[s[full+1]]
	c, d := byte(0), byte(0)
	if pad < 2 {
		c = b64Values[s[full+2]]
	}
	if pad < 1 {
		d = b64Values[s[full+3]]
	}
	if (a|b|c|d)&0xc0 != 0 {
		return nil, errBase64
	}
	n := uint(a)<<18 | uint(b)<<12 | uint(c)<<6 | uint(d)
	switch pad {
	case 0:
		out[o], out[o+1], out[o+2] = byte(n>>16), byte(n>>8), byte(n)
	case 1:
		if n&0xff != 0 { // non-zero pad bits
			return nil, errBase64
		}
		out[o], out[o+1] = byte(n>>16), byte(n>>8)
	case 2:
		if n&0xffff != 0 {
			return nil, errBase64
		}
		out[o] = byte(n >> 16)
	}
	return out, nil
}

var errBase64 = fmt.Errorf("%w: invalid base64", ErrMalformed)
