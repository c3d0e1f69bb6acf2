package controlplane_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"polydev/internal/crypto"
	"polydev/internal/store"
	"polydev/internal/store/sqlite"
)

// openEnvelope opens a symmetric envelope with a raw key, written from
// docs/crypto.md §4–5 alone: it lets this test hold the raw keys the
// crypto package never hands out, and checks the spec along the way.
func openEnvelope(t *testing.T, key []byte, c crypto.Context, env string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(env)
	if err != nil || len(b) < 29 || b[0] != 1 {
		t.Fatalf("not a symmetric envelope: %v", err)
	}
	aad := []byte("polydev\x00\x01")
	for _, s := range []string{c.Table, c.Field, c.Row, c.Owner} {
		aad = binary.BigEndian.AppendUint16(aad, uint16(len(s)))
		aad = append(aad, s...)
	}
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	pt, err := g.Open(nil, b[1:13], b[13:], aad)
	if err != nil {
		t.Fatalf("open envelope per the spec: %v", err)
	}
	return pt
}

// forms are the ways a secret could appear in a file or a log: raw, hex in
// either case, and standard and URL base64 of the secret starting at each
// of the three byte offsets modulo 3 within whatever was encoded — a
// secret inside a larger encoded value shows up as one of these.
func forms(secret []byte) map[string]string {
	f := map[string]string{
		"raw": string(secret),
		"hex": hex.EncodeToString(secret),
		"HEX": strings.ToUpper(hex.EncodeToString(secret)),
	}
	for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
		for k := range 3 {
			f[fmt.Sprintf("%s+%d", name, k)] = aligned(enc, secret, k)
		}
	}
	return f
}

// aligned is the part of enc's encoding of k arbitrary bytes followed by
// secret (then anything) that depends on the secret's bytes alone: the
// characters that mix in the k bytes before, and the last partial group
// that mixes in the bytes after, are left out.
func aligned(enc *base64.Encoding, secret []byte, k int) string {
	buf := append(make([]byte, k), secret...)
	s := enc.EncodeToString(buf[:len(buf)/3*3]) // whole groups: no padding
	skip := [3]int{0, 2, 3}[k]
	if len(s) <= skip {
		return ""
	}
	return s[skip:]
}

// TestNoSecretsAtRest registers and logs in through the API, then searches
// the database files (SQLite and its WAL), a pg_dump and the server's log
// for the password, the master, wrap, auth and account keys and the private
// key, in every usual encoding: none may appear.
func TestNoSecretsAtRest(t *testing.T) {
	t.Parallel()
	type backend struct {
		st    store.Store
		dump  func() []byte // everything the database holds
		close func()
	}
	for name, open := range map[string]func(t *testing.T) backend{
		"sqlite": func(t *testing.T) backend {
			path := filepath.Join(t.TempDir(), "polydev.db")
			st, err := sqlite.Open(context.Background(), path, sqlite.WithMigrate())
			if err != nil {
				t.Fatal(err)
			}
			files := func() []byte {
				var all []byte
				for _, f := range []string{path, path + "-wal", path + "-shm"} {
					b, _ := os.ReadFile(f)
					all = append(all, b...)
				}
				return all
			}
			return backend{st: st, dump: files, close: func() { st.Close() }}
		},
		"postgres": func(t *testing.T) backend {
			st, c, owner := postgresStore(t)
			dump := func() []byte {
				out, err := exec.Command(filepath.Join(c.BinDir(), "pg_dump"), "--data-only", "--inserts", owner).CombinedOutput()
				if err != nil {
					t.Fatalf("pg_dump: %v\n%s", err, out)
				}
				if !bytes.Contains(out, []byte("INSERT INTO public.users")) {
					t.Fatalf("pg_dump holds no users: the search would prove nothing\n%.2000s", out)
				}
				return out
			}
			return backend{st: st, dump: dump, close: func() { st.Close() }}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			var logs bytes.Buffer
			var mu sync.Mutex
			base, stop := startWith(t, b.st, syncWriter{&logs, &mu})
			c := &apiClient{t: t, base: base}
			const password = "Zq9 hunter2 — a passphrase nobody else uses"
			a := newAccount(t, "secret@example.org", password)
			if s, out, _ := c.call("POST", "/v1/auth/register", a.body); s != 201 {
				t.Fatalf("register: %d %v", s, out)
			}
			if s, out := loginAs(t, c, a.email, password); s != 200 {
				t.Fatalf("login: %d %v", s, out)
			}
			// A wrong login too, so failure paths are in the logs.
			loginAs(t, c, a.email, password+"!")

			// The raw secrets, recomputed from the spec.
			master, err := pbkdf2.Key(sha256.New, password, a.params.Salt, int(a.params.Iterations), 32)
			if err != nil {
				t.Fatal(err)
			}
			wrap, _ := hkdf.Key(sha256.New, master, nil, "polydev/v1/wrap-key", 32)
			authKey, _ := hkdf.Key(sha256.New, master, nil, "polydev/v1/auth-key", 32)
			if base64.StdEncoding.EncodeToString(authKey) != a.authKey {
				t.Fatal("the spec's derivation does not give the client's auth key")
			}
			accountKey := openEnvelope(t, wrap, crypto.AccountKeyContext(a.userID), a.body["wrapped_account_key"].(string))
			record := openEnvelope(t, accountKey, crypto.PrivateKeyContext(a.userID), a.body["wrapped_private_key"].(string))
			secrets := map[string][]byte{
				"password": []byte(password), "master key": master, "wrap key": wrap, "auth key": authKey,
				"account key": accountKey, "private key": record[3:],
			}

			if err := stop(); err != nil {
				t.Fatal(err)
			}
			kdf, _ := json.Marshal(a.params)
			for where, data := range map[string][]byte{"database (open)": b.dump(), "server log": logs.Bytes()} {
				if where == "database (open)" && !bytes.Contains(data, []byte(a.body["wrapped_account_key"].(string))) && !bytes.Contains(data, kdf[:20]) {
					t.Fatalf("%s does not even hold the wrapped key: the search would prove nothing", where)
				}
				for what, secret := range secrets {
					for enc, form := range forms(secret) {
						if bytes.Contains(data, []byte(form)) {
							t.Errorf("%s contains the %s (%s)", where, what, enc)
						}
					}
				}
			}
			b.close()
			after := b.dump()
			for what, secret := range secrets {
				for enc, form := range forms(secret) {
					if bytes.Contains(after, []byte(form)) {
						t.Errorf("database (closed) contains the %s (%s)", what, enc)
					}
				}
			}
			t.Logf("searched %d bytes of database and %d bytes of log for %d secrets in %d encodings", len(after), logs.Len(), len(secrets), len(forms(nil)))
		})
	}
}

// TestForms: whatever bytes surround a secret, its base64 encoding
// contains one of the secret's aligned forms, which are never empty.
func TestForms(t *testing.T) {
	t.Parallel()
	secret := []byte("a secret of some twenty-odd bytes")
	for before := range 7 {
		for after := range 4 {
			data := append(append(bytes.Repeat([]byte{0xa5}, before), secret...), bytes.Repeat([]byte{0x5a}, after)...)
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				s := enc.EncodeToString(data)
				found := false
				for name, f := range forms(secret) {
					if f == "" {
						t.Fatalf("form %s is empty", name)
					}
					found = found || strings.Contains(s, f)
				}
				if !found {
					t.Errorf("%d bytes before, %d after: %s holds none of the forms", before, after, s)
				}
			}
		}
	}
}
