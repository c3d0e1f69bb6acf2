package crypto_test

// Public test vectors for the primitives under the formats: Wycheproof
// AES-GCM, HKDF-SHA256 and X25519, RFC 9180's HPKE vectors and the
// draft-ietf-hpke-pq X-Wing vectors. Each source is fetched at a pinned
// version through the Go module proxy (as golang.org/x/crypto does for
// Wycheproof) or read from the Go toolchain; each subtest logs
// passed / failed / skipped counts and the reason for every kind of skip.

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"polydev/internal/crypto"
	"polydev/internal/testenv"
)

// Pinned sources.
const (
	wycheproofModule  = "github.com/C2SP/wycheproof"
	wycheproofVersion = "v0.0.0-20250901140545-b51abcfb8daf"
	circlModule       = "github.com/cloudflare/circl"
	circlVersion      = "v1.6.5"
	circlRFC9180File  = "hpke/testdata/vectors_rfc9180_5f503c5.json.gz"
)

// moduleDir downloads a module at a pinned version into the module cache
// and returns its directory.
func moduleDir(t *testing.T, path, version string) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "mod", "download", "-json", path+"@"+version).Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); err != nil || jerr != nil || info.Dir == "" {
		testenv.Missing(t, "cannot fetch %s@%s through the Go module proxy: %v %s", path, version, err, info.Error)
	}
	return info.Dir
}

// tally counts outcomes and skip reasons for one source.
type tally struct {
	passed, failed int
	skipped        map[string]int
}

func (c *tally) skip(reason string) {
	if c.skipped == nil {
		c.skipped = map[string]int{}
	}
	c.skipped[reason]++
}

// record counts one vector's outcome, reporting a wrong one.
func (c *tally) record(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		c.passed++
		return
	}
	c.failed++
	t.Errorf(format, args...)
}

func (c *tally) report(t *testing.T, name string) {
	t.Helper()
	n := 0
	var reasons []string
	for r, k := range c.skipped {
		n += k
		reasons = append(reasons, fmt.Sprintf("%d: %s", k, r))
	}
	sort.Strings(reasons)
	t.Logf("public vectors %s: %d passed, %d failed, %d skipped", name, c.passed, c.failed, n)
	for _, r := range reasons {
		t.Logf("    skipped %s", r)
	}
	if c.passed == 0 {
		t.Errorf("%s: no vector ran", name)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(zr).Decode(v); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

type wycheproofFile[G any] struct {
	Algorithm  string `json:"algorithm"`
	TestGroups []G    `json:"testGroups"`
}

func TestPublicVectorsWycheproofAESGCM(t *testing.T) {
	dir := moduleDir(t, wycheproofModule, wycheproofVersion)
	var f wycheproofFile[struct {
		IVSize, KeySize, TagSize int
		Tests                    []struct {
			TcID                       int `json:"tcId"`
			Key, IV, AAD, Msg, CT, Tag string
			Result                     string
		}
	}]
	readJSON(t, filepath.Join(dir, "testvectors_v1", "aes_gcm_test.json"), &f)
	var c tally
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			switch {
			case g.KeySize != 256:
				c.skip("key size other than 256 bits (Polydev uses AES-256 only)")
				continue
			case g.IVSize != 96:
				c.skip("nonce size other than 96 bits (Polydev uses 96-bit nonces only; the envelope has no other)")
				continue
			case g.TagSize != 128:
				c.skip("tag size other than 128 bits (Polydev uses 128-bit tags only)")
				continue
			}
			aead, err := crypto.NewGCMForTest(unhex(t, tc.Key))
			if err != nil {
				t.Fatalf("tc %d: %v", tc.TcID, err)
			}
			ct := append(unhex(t, tc.CT), unhex(t, tc.Tag)...)
			pt, openErr := aead.Open(nil, unhex(t, tc.IV), ct, unhex(t, tc.AAD))
			ok := false
			switch tc.Result {
			case "valid":
				sealed := aead.Seal(nil, unhex(t, tc.IV), unhex(t, tc.Msg), unhex(t, tc.AAD))
				ok = openErr == nil && bytes.Equal(pt, unhex(t, tc.Msg)) && bytes.Equal(sealed, ct)
			case "invalid":
				ok = openErr != nil
			default:
				c.skip("result " + tc.Result)
				continue
			}
			c.record(t, ok, "aes-gcm tc %d (%s): wrong outcome", tc.TcID, tc.Result)
		}
	}
	c.report(t, "wycheproof aes_gcm_test.json")
}

func TestPublicVectorsWycheproofHKDF(t *testing.T) {
	dir := moduleDir(t, wycheproofModule, wycheproofVersion)
	var f wycheproofFile[struct {
		Tests []struct {
			TcID                         int `json:"tcId"`
			IKM, Salt, Info, OKM, Result string
			Size                         int
		}
	}]
	readJSON(t, filepath.Join(dir, "testvectors_v1", "hkdf_sha256_test.json"), &f)
	var c tally
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			okm, err := hkdf.Key(sha256.New, unhex(t, tc.IKM), unhex(t, tc.Salt), string(unhex(t, tc.Info)), tc.Size)
			var ok bool
			switch tc.Result {
			case "valid":
				ok = err == nil && bytes.Equal(okm, unhex(t, tc.OKM))
			case "invalid":
				ok = err != nil
			default:
				c.skip("result " + tc.Result)
				continue
			}
			c.record(t, ok, "hkdf tc %d (%s): wrong outcome (err %v)", tc.TcID, tc.Result, err)
		}
	}
	c.report(t, "wycheproof hkdf_sha256_test.json")
}

func TestPublicVectorsWycheproofX25519(t *testing.T) {
	dir := moduleDir(t, wycheproofModule, wycheproofVersion)
	var f wycheproofFile[struct {
		Tests []struct {
			TcID                            int `json:"tcId"`
			Public, Private, Shared, Result string
			Flags                           []string
		}
	}]
	readJSON(t, filepath.Join(dir, "testvectors_v1", "x25519_test.json"), &f)
	var c tally
	zero := make([]byte, 32)
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			priv, err := ecdh.X25519().NewPrivateKey(unhex(t, tc.Private))
			if err != nil {
				t.Fatalf("tc %d: private key: %v", tc.TcID, err)
			}
			var shared []byte
			pub, err := ecdh.X25519().NewPublicKey(unhex(t, tc.Public))
			if err == nil {
				shared, err = priv.ECDH(pub)
			}
			want := unhex(t, tc.Shared)
			var ok bool
			switch {
			case bytes.Equal(want, zero):
				// A low-order public key gives an all-zero secret, which
				// HPKE's DHKEM must refuse (RFC 9180 §7.1.4).
				ok = err != nil
			case tc.Result == "valid" || tc.Result == "acceptable":
				ok = err == nil && bytes.Equal(shared, want)
			default:
				ok = err != nil
			}
			c.record(t, ok, "x25519 tc %d (%s %v): wrong outcome (err %v)", tc.TcID, tc.Result, tc.Flags, err)
		}
	}
	c.report(t, "wycheproof x25519_test.json")
}

type hpkeVector struct {
	Mode        int    `json:"mode"`
	KEMID       uint16 `json:"kem_id"`
	KDFID       uint16 `json:"kdf_id"`
	AEADID      uint16 `json:"aead_id"`
	Info        string `json:"info"`
	IKMR        string `json:"ikmR"`
	SKRm        string `json:"skRm"`
	PKRm        string `json:"pkRm"`
	Enc         string `json:"enc"`
	Encryptions []struct {
		AAD, CT, PT string
	} `json:"encryptions"`
	Exports []struct {
		ExporterContext string `json:"exporter_context"`
		L               int    `json:"L"`
		ExportedValue   string `json:"exported_value"`
	} `json:"exports"`
}

// checkHPKEVector derives the recipient's key pair from ikmR, compares it
// with the vector, then opens every encryption in sequence and checks every
// export.
func checkHPKEVector(t *testing.T, v hpkeVector) error {
	kem, err := hpke.NewKEM(v.KEMID)
	if err != nil {
		return err
	}
	kdf, err := hpke.NewKDF(v.KDFID)
	if err != nil {
		return err
	}
	aead, err := hpke.NewAEAD(v.AEADID)
	if err != nil {
		return err
	}
	sk, err := kem.DeriveKeyPair(unhex(t, v.IKMR))
	if err != nil {
		return fmt.Errorf("derive key pair: %w", err)
	}
	skb, err := sk.Bytes()
	if err != nil {
		return err
	}
	// Compare private keys through the KEM's own deserialisation: RFC 9180
	// serialises X25519 scalars clamped (§7.1.2), the published skRm are not.
	want, err := kem.NewPrivateKey(unhex(t, v.SKRm))
	if err != nil {
		return fmt.Errorf("vector skRm: %w", err)
	}
	wantb, err := want.Bytes()
	if err != nil {
		return err
	}
	if !bytes.Equal(skb, wantb) || !bytes.Equal(sk.PublicKey().Bytes(), unhex(t, v.PKRm)) {
		return fmt.Errorf("derived key pair differs")
	}
	r, err := hpke.NewRecipient(unhex(t, v.Enc), sk, kdf, aead, unhex(t, v.Info))
	if err != nil {
		return fmt.Errorf("recipient: %w", err)
	}
	for i, e := range v.Encryptions {
		pt, err := r.Open(unhex(t, e.AAD), unhex(t, e.CT))
		if err != nil || !bytes.Equal(pt, unhex(t, e.PT)) {
			return fmt.Errorf("encryption %d: %v", i, err)
		}
	}
	for i, x := range v.Exports {
		got, err := r.Export(string(unhex(t, x.ExporterContext)), x.L)
		if err != nil || !bytes.Equal(got, unhex(t, x.ExportedValue)) {
			return fmt.Errorf("export %d: %v", i, err)
		}
	}
	return nil
}

func TestPublicVectorsRFC9180(t *testing.T) {
	dir := moduleDir(t, circlModule, circlVersion)
	var vs []hpkeVector
	readJSON(t, filepath.Join(dir, circlRFC9180File), &vs)
	var c tally
	x := crypto.SuiteX25519
	for _, v := range vs {
		switch {
		case v.Mode != 0:
			c.skip("mode other than base (Polydev uses base mode only)")
		case v.KEMID != x.KEM || v.KDFID != x.KDF || v.AEADID != x.AEAD:
			c.skip("suite not used by Polydev")
		default:
			err := checkHPKEVector(t, v)
			c.record(t, err == nil, "rfc9180 suite %04x/%04x/%04x: %v", v.KEMID, v.KDFID, v.AEADID, err)
		}
	}
	c.report(t, fmt.Sprintf("rfc9180 (%s@%s)", circlModule, circlVersion))
}

func TestPublicVectorsXWing(t *testing.T) {
	path := filepath.Join(runtime.GOROOT(), "src", "crypto", "hpke", "testdata", "hpke-pq.json")
	if _, err := os.Stat(path); err != nil {
		testenv.Missing(t, "the Go toolchain's hpke-pq.json vectors are missing: %v", err)
	}
	var vs []hpkeVector
	readJSON(t, path, &vs)
	var c tally
	for _, v := range vs {
		switch {
		case v.Mode != 0:
			c.skip("mode other than base (Polydev uses base mode only)")
		case v.KEMID != crypto.SuiteXWing.KEM:
			c.skip("KEM other than X-Wing")
		default:
			// The draft's X-Wing vectors pair the KEM with other AEADs and
			// KDFs; the KEM (decapsulation and key derivation) is what they
			// prove, the rest of the suite is covered above.
			err := checkHPKEVector(t, v)
			c.record(t, err == nil, "xwing suite %04x/%04x/%04x: %v", v.KEMID, v.KDFID, v.AEADID, err)
		}
	}
	c.report(t, "draft-ietf-hpke-pq X-Wing ("+runtime.Version()+" crypto/hpke/testdata)")
}
