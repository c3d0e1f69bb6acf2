package controlplane_test

// Fuzz targets for the request decoders of the auth API: whatever the body,
// the answer is a success or a documented 4xx in the one error shape —
// never a 5xx, a panic or a different shape. Run with scripts/fuzz.sh or
//
//	go test ./internal/controlplane -run '^$' -fuzz '^FuzzRegister$' -fuzztime 10m

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/web"
)

func newFuzzServer(f *testing.F) http.Handler {
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: time.Second,
		Store: sqliteStore(f), SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{1}, 32)},
		slog.New(slog.NewTextHandler(io.Discard, nil)), web.Assets)
	if err != nil {
		f.Fatal(err)
	}
	return srv.Handler()
}

func fuzzPost(f *testing.F, path string, seeds ...any) {
	h := newFuzzServer(f)
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"email":`))
	f.Add([]byte(`{"email":"a@b.c","x":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s answered %d to %q: %s", path, rec.Code, body, rec.Body.Bytes())
		}
		if rec.Code >= 400 {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s answered %d without the error shape: %s", path, rec.Code, rec.Body.Bytes())
			}
		}
	})
}

func FuzzRegister(f *testing.F) {
	a := newAccount(f, "fuzz@example.org", "a passphrase for fuzzing")
	fuzzPost(f, "/v1/auth/register", a.body)
}

func FuzzLogin(f *testing.F) {
	fuzzPost(f, "/v1/auth/login", map[string]string{"email": "fuzz@example.org", "auth_key": crypto.EncodeText(make([]byte, 32))})
}

func FuzzPrelogin(f *testing.F) {
	fuzzPost(f, "/v1/auth/prelogin", map[string]string{"email": "fuzz@example.org"})
}
