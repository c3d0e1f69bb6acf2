package crypto_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"polydev/internal/testenv"
)

// TestChromium runs the browser module in a real headless Chromium: it
// checks every shared vector and a fresh Go-made set there, makes its own
// fresh cases, and this implementation checks those — the same round trip
// as the Node tests, in the browser the web app targets.
func TestChromium(t *testing.T) {
	t.Parallel()
	var chromium string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		testenv.Missing(t, "no chromium in PATH (apt-get install chromium)")
	}
	root := testenv.RepoRoot(t)
	var goMade []byte
	t.Run("generate", func(t *testing.T) { goMade = encodeVectors(t, generateVectors(t, false)) })

	type report struct {
		Fatal     string `json:"fatal"`
		UserAgent string `json:"userAgent"`
		Groups    map[string]struct {
			Total    int      `json:"total"`
			Failures []string `json:"failures"`
		} `json:"groups"`
		Made *vectorFile `json:"made"`
	}
	results := make(chan report, 1)
	mux := http.NewServeMux()
	mux.Handle("GET /web/", http.StripPrefix("/web/", http.FileServer(http.Dir(filepath.Join(root, "web")))))
	mux.HandleFunc("GET /testdata/vectors.json", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(root, "testdata", "crypto", "vectors.json"))
	})
	mux.HandleFunc("GET /go-made.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(goMade)
	})
	mux.HandleFunc("POST /result", func(w http.ResponseWriter, r *http.Request) {
		var rep report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			rep.Fatal = "bad report: " + err.Error()
		}
		select {
		case results <- rep:
		default:
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	profile := t.TempDir()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+profile, "http://"+ln.Addr().String()+"/web/test/browser.html")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		os.RemoveAll(profile)
	})

	var rep report
	select {
	case rep = <-results:
	case err := <-exited:
		t.Fatalf("chromium exited before reporting: %v\n%s", err, stderr.String())
	case <-ctx.Done():
		t.Fatalf("no report from chromium within the deadline\n%s", stderr.String())
	}
	if rep.Fatal != "" {
		t.Fatalf("browser: %s", rep.Fatal)
	}
	t.Logf("browser: %s", rep.UserAgent)
	for _, g := range []string{"shared", "go_made"} {
		r := rep.Groups[g]
		for _, f := range r.Failures {
			t.Errorf("chromium, %s vectors: %s", g, f)
		}
		if r.Total < 100 {
			t.Errorf("chromium checked only %d %s cases", r.Total, g)
		}
		t.Logf("chromium checked %d %s cases: %d passed, %d failed", r.Total, g, r.Total-len(r.Failures), len(r.Failures))
	}
	if rep.Made == nil {
		t.Fatal("chromium made no cases")
	}
	checked := checkAll(rep.Made)
	for _, r := range checked {
		if r.Err != nil {
			t.Errorf("chromium-made %s / %s: %v", r.Group, r.Name, r.Err)
		}
	}
	t.Logf("go checked %d chromium-made cases", len(checked))
}
