package client_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/client"
	"polydev/internal/crypto"
)

// The state directory is private, the file is private and replaced
// atomically, and nothing in it opens without the password.
func TestStateHoldsNoSecret(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	c := client.New(srv.URL, nil)
	email := newEmail()
	reg := mustRegister(t, c, email, testPassword)
	sess, keys := mustLogin(t, c, email, testPassword)

	// A directory that exists with a wider mode is narrowed.
	dir := filepath.Join(t.TempDir(), "polydev")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st := client.NewState(dir)
	for range 2 { // the second save replaces the first
		if err := st.Save(sess); err != nil {
			t.Fatal(err)
		}
	}
	checkMode(t, dir, 0o700)
	checkMode(t, st.Path(), 0o600)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "session.json" {
		t.Errorf("state directory holds %v; want only session.json (no temporary files left)", entries)
	}
	data, err := os.ReadFile(st.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{sess.Token, reg.UserID, email, srv.URL, sess.WrappedAccountKey, sess.PublicKey} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("session.json lacks %.40q", want)
		}
	}

	// Every secret the client derived or unwrapped, in every likely form.
	params, err := crypto.ParseKDFParams(sess.KDF)
	if err != nil {
		t.Fatal(err)
	}
	master, err := crypto.DeriveMasterKey([]byte(testPassword), params)
	if err != nil {
		t.Fatal(err)
	}
	auth, wrap, err := crypto.DeriveSubkeys(master)
	if err != nil {
		t.Fatal(err)
	}
	privRecord, err := crypto.Open(keys.Account, crypto.PrivateKeyContext(reg.UserID), sess.WrappedPrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"password":           []byte(testPassword),
		"master key":         rawKey(t, master),
		"auth key":           rawKey(t, auth.Key),
		"wrap key":           rawKey(t, wrap),
		"account key":        rawKey(t, keys.Account),
		"private key record": privRecord,
		"private key seed":   privRecord[3:],
	}
	for _, leak := range leaks(data, secrets) {
		t.Errorf("session.json contains the %s", leak)
	}
	// The search is not blind: it finds a key planted in the file.
	planted := append(bytes.Clone(data), encodings(secrets["account key"])["hex, upper case"]...)
	if got := leaks(planted, secrets); len(got) != 1 || got[0] != "account key (hex, upper case)" {
		t.Errorf("search of a file with a planted account key: got %v; want the account key (hex, upper case)", got)
	}
}

// leaks names every secret found in data, in every form of encodings.
func leaks(data []byte, secrets map[string][]byte) []string {
	var found []string
	for name, secret := range secrets {
		for form, enc := range encodings(secret) {
			if bytes.Contains(data, enc) {
				found = append(found, name+" ("+form+")")
			}
		}
	}
	return found
}

// encodings are the forms a secret could leak in.
func encodings(b []byte) map[string][]byte {
	return map[string][]byte{
		"raw":              b,
		"hex":              []byte(hex.EncodeToString(b)),
		"hex, upper case":  []byte(strings.ToUpper(hex.EncodeToString(b))),
		"base64":           []byte(base64.StdEncoding.EncodeToString(b)),
		"base64 unpadded":  []byte(base64.RawStdEncoding.EncodeToString(b)),
		"base64url":        []byte(base64.URLEncoding.EncodeToString(b)),
		"base64url unpad.": []byte(base64.RawURLEncoding.EncodeToString(b)),
	}
}

// rawKey returns a key's bytes through the public API: wrap it under a
// throwaway key and open the envelope.
func rawKey(t *testing.T, k crypto.Key) []byte {
	t.Helper()
	tmp := crypto.NewKey()
	defer tmp.Wipe()
	ctx := crypto.Context{Table: "test", Field: "raw_key"}
	wrapped, err := crypto.WrapKey(tmp, ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := crypto.Open(tmp, ctx, wrapped)
	if err != nil || len(b) != crypto.KeySize {
		t.Fatalf("raw key: %v", err)
	}
	return b
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o; want %o", path, got, want)
	}
}

func TestStateLifecycle(t *testing.T) {
	t.Parallel()
	st := client.NewState(filepath.Join(t.TempDir(), "a", "b"))
	if _, err := st.Load(); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("load without a file: got %v; want ErrNotLoggedIn", err)
	}
	if err := st.Logout(); err != nil {
		t.Errorf("logout without a file: %v", err)
	}
	sess := &client.Session{Server: "http://127.0.0.1:1", Email: "ada@example.org", UserID: "u", UserNumber: 7,
		Token: "tok", ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		KeyBundle: client.KeyBundle{KDF: []byte(`{"version":1}`), WrappedAccountKey: "w1", WrappedPrivateKey: "w2", PublicKey: "pk"}}
	if err := st.Save(sess); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != "tok" || !got.ExpiresAt.Equal(sess.ExpiresAt) || got.UserNumber != 7 || got.WrappedPrivateKey != "w2" || got.Version != 1 {
		t.Errorf("round trip: got %+v", got)
	}
	if err := got.Active(time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("active before expiry: %v", err)
	}
	if err := got.Active(sess.ExpiresAt); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("active at expiry: got %v; want ErrSessionExpired", err)
	}

	if err := st.Logout(); err != nil {
		t.Fatal(err)
	}
	got, err = st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != "" || got.Email != "ada@example.org" || !got.ExpiresAt.IsZero() {
		t.Errorf("after logout: got token %q, email %q, expires %v; want no token, the email kept", got.Token, got.Email, got.ExpiresAt)
	}
	if err := got.Active(time.Now()); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("active after logout: got %v; want ErrNotLoggedIn", err)
	}
	raw, _ := os.ReadFile(st.Path())
	if strings.Contains(string(raw), "tok") {
		t.Errorf("the token is still in the file after logout: %s", raw)
	}

	if err := st.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := st.Load(); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("load after remove: got %v; want ErrNotLoggedIn", err)
	}

	for _, bad := range []string{"{", `{"version":2}`} {
		if err := os.WriteFile(st.Path(), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(); err == nil || errors.Is(err, client.ErrNotLoggedIn) {
			t.Errorf("load %q: got %v; want a clear error", bad, err)
		}
	}
}
