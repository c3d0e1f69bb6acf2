package crypto_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/crypto/vectors.json from the generator")

var vectorPath = filepath.Join("..", "..", "testdata", "crypto", "vectors.json")

func encodeVectors(t *testing.T, f *vectorFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func loadVectors(t *testing.T) (*vectorFile, []byte) {
	t.Helper()
	data, err := os.ReadFile(vectorPath)
	if err != nil {
		t.Fatalf("read vectors: %v (regenerate with: go test ./internal/crypto -run TestVectorFile -update)", err)
	}
	var f vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	return &f, data
}

// TestVectorFile regenerates the shared vectors with the fixed seed and
// requires the committed file to match byte for byte (so a single changed
// bit anywhere in it fails), then checks every case with this
// implementation. With -update it rewrites the file and its checksum.
func TestVectorFile(t *testing.T) {
	var generated []byte
	t.Run("generate", func(t *testing.T) { generated = encodeVectors(t, generateVectors(t, true)) })
	sum := sha256.Sum256(generated)
	sumLine := hex.EncodeToString(sum[:]) + "  vectors.json\n"
	if *update {
		if err := os.MkdirAll(filepath.Dir(vectorPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorPath, generated, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorPath+".sha256", []byte(sumLine), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", vectorPath, len(generated))
	}
	f, committed := loadVectors(t)
	if !bytes.Equal(committed, generated) {
		t.Errorf("%s differs from the generator's output; if the format changed on purpose, regenerate with -update", vectorPath)
	}
	if sumFile, err := os.ReadFile(vectorPath + ".sha256"); err != nil || string(sumFile) != sumLine {
		t.Errorf("%s.sha256 does not match the generated file", vectorPath)
	}

	counts := map[string][2]int{}
	for _, r := range checkAll(f) {
		c := counts[r.Group]
		c[0]++
		if r.Err != nil {
			c[1]++
			t.Errorf("%s / %s: %v", r.Group, r.Name, r.Err)
		}
		counts[r.Group] = c
	}
	total, failed := 0, 0
	for _, g := range []string{"kdf", "symmetric", "sealed", "wrap", "public_keys", "hierarchy"} {
		c := counts[g]
		if c[0] == 0 {
			t.Errorf("group %s has no cases", g)
		}
		t.Logf("shared vectors %-12s %3d cases, %d failed", g, c[0], c[1])
		total += c[0]
		failed += c[1]
	}
	t.Logf("shared vectors: %d passed, %d failed", total-failed, failed)
}

// TestVectorsDetectTampering proves the checker is sensitive: for every valid
// case, changing one bit of any value it declares must make the check fail.
func TestVectorsDetectTampering(t *testing.T) {
	f, _ := loadVectors(t)
	flipped, undetected := 0, 0
	tamper := func(group, name string, field *string, check func() error) {
		if *field == "" {
			return
		}
		orig := *field
		defer func() { *field = orig }()
		b := []byte(orig)
		// Flip a bit of a character in the middle, keeping it a
		// different character of the same text.
		i := len(b) / 2
		b[i] ^= 0x01
		*field = string(b)
		flipped++
		if err := check(); err == nil {
			undetected++
			t.Errorf("%s / %s: changed one bit of %q and the check still passed", group, name, orig)
		}
	}
	for i := range f.Symmetric {
		c := &f.Symmetric[i]
		if c.Error != "" {
			continue
		}
		for _, p := range []*string{&c.Key, &c.Plaintext, &c.Envelope, &c.Context.Table, &c.Context.Field, &c.Context.Row, &c.Context.Owner} {
			tamper("symmetric", c.Name, p, func() error { return checkSym(*c) })
		}
	}
	for i := range f.Sealed {
		c := &f.Sealed[i]
		if c.Error != "" {
			continue
		}
		for _, p := range []*string{&c.PrivateKey, &c.PublicKey, &c.Plaintext, &c.Envelope, &c.Context.Field, &c.Context.Row, &c.Context.Owner} {
			tamper("sealed", c.Name, p, func() error { return checkSealed(*c) })
		}
	}
	for i := range f.Wrap {
		c := &f.Wrap[i]
		if c.Error != "" {
			continue
		}
		for _, p := range []*string{&c.WrappingKey, &c.Unwrapped, &c.Wrapped, &c.PublicKey, &c.Context.Row} {
			tamper("wrap", c.Name, p, func() error { return checkWrap(*c) })
		}
	}
	for i := range f.KDF {
		c := &f.KDF[i]
		if c.Error != "" || c.Password == nil || c.Record != c.Canonical {
			continue
		}
		// One derivation per field is slow (64 MiB Argon2id); tamper with
		// the outputs, which needs no re-derivation to detect but does run
		// the full check.
		for _, p := range []*string{&c.MasterKey, &c.AuthKey, &c.WrapKey} {
			tamper("kdf", c.Name, p, func() error { return checkKDF(*c) })
		}
	}
	for i := range f.PublicKey {
		c := &f.PublicKey[i]
		if c.Error != "" {
			continue
		}
		for _, p := range []*string{&c.PublicKey, &c.Key, &c.Suite} {
			tamper("public_keys", c.Name, p, func() error { return checkPublicKey(*c) })
		}
	}
	for i := range f.Hierarchy {
		c := &f.Hierarchy[i]
		for _, p := range []*string{&c.Password, &c.KDFRecord, &c.UserID, &c.AuthKey, &c.WrappedAccountKey, &c.AccountKey,
			&c.WrappedPrivateKey, &c.PublicKey, &c.ConversationID, &c.WrappedConversationKey, &c.ConversationKey,
			&c.MessageID, &c.EncryptedMessage, &c.Message, &c.Provider, &c.SealedToken, &c.Token} {
			tamper("hierarchy", c.Name, p, func() error { return checkHierarchy(*c) })
		}
	}
	t.Logf("tampered %d values, %d went undetected", flipped, undetected)
	if flipped == 0 {
		t.Fatal("no value was tampered with")
	}
}

// TestVectorSchemaRoundTrip guards the schema itself: decoding and
// re-encoding the committed file changes nothing, so no member is silently
// dropped by the Go checker.
func TestVectorSchemaRoundTrip(t *testing.T) {
	f, data := loadVectors(t)
	if again := encodeVectors(t, f); !bytes.Equal(again, data) {
		t.Fatal("vectors.json does not survive a decode/encode round trip: the schema in vectorcheck_test.go is out of date")
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil || reflect.ValueOf(generic).Kind() != reflect.Map {
		t.Fatal("vectors.json is not a JSON object")
	}
}
