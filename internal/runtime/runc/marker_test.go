package runc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"polydev/internal/runtime/runc"
	"polydev/internal/worker"
)

// findMarker lists the files under dirs, and the /proc/*/environ files,
// that contain any of needles.
func findMarker(t *testing.T, dirs []string, needles [][]byte) []string {
	t.Helper()
	var hits []string
	check := func(p string) {
		f, err := os.Open(p)
		if err != nil {
			return
		}
		defer f.Close()
		// At most 64 MiB: pseudo-files report size 0 and may be endless.
		b, err := io.ReadAll(io.LimitReader(f, 64<<20))
		if err != nil && len(b) == 0 {
			return
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				hits = append(hits, p)
				return
			}
		}
	}
	for _, d := range dirs {
		top, err := os.Stat(d)
		if err != nil {
			continue
		}
		dev := top.Sys().(*syscall.Stat_t).Dev
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.IsDir() {
				if strings.HasPrefix(e.Name(), "go-build") {
					return filepath.SkipDir // compiled test binaries
				}
				// Stay on the searched filesystem: a chroot under /tmp may
				// have /proc, /sys or /dev mounted inside it.
				if fi, err := e.Info(); err == nil && fi.Sys().(*syscall.Stat_t).Dev != dev {
					return filepath.SkipDir
				}
				return nil
			}
			if e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil && fi.Size() < 64<<20 {
					check(p)
				}
			}
			return nil
		})
	}
	envs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range envs {
		check(p)
	}
	return hits
}

// A marker credential sent in a task is found nowhere on the host
// filesystem — the runtime's directories, /tmp, /run, /dev/shm, the
// container's own tmpfs — nor in any process environment after the request.
func TestMarkerLeavesNoTrace(t *testing.T) {
	root := newRoot(t)
	p := newPool(t, runc.Config{Root: root})
	raw := make([]byte, 16)
	rand.Read(raw)
	marker := "pdmarker" + hex.EncodeToString(raw)
	needles := [][]byte{[]byte(marker), []byte(base64.StdEncoding.EncodeToString([]byte(marker))), []byte(hex.EncodeToString([]byte(marker)))}

	task := worker.Task{
		Job: worker.Job{
			RequestID: "r1", UserID: "marker-user", ConversationID: "c1", Provider: "openai",
			Grant: "sealed-" + marker, KeyID: "k1", AssistantMessageID: "m1",
			History: []worker.Message{{ID: "1", Role: "user", EncryptedContent: "ct-" + marker}},
		},
		RuntimeKey: []byte(marker),
	}
	var done *worker.Result
	if err := p.Execute(context.Background(), task, func(e worker.Event) error {
		if e.Done != nil {
			done = e.Done
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if done == nil {
		t.Fatal("no done event")
	}
	// The container is still alive (kept for this user): its tmpfs is
	// searched through /proc/PID/root.
	dirs := []string{root, os.TempDir(), "/run", "/dev/shm", "/var/tmp"}
	hostTmp, err := os.Stat("/tmp")
	if err != nil {
		t.Fatal(err)
	}
	tmps, _ := filepath.Glob("/proc/[0-9]*/root/tmp")
	containers := 0
	for _, d := range tmps {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && !os.SameFile(fi, hostTmp) {
			dirs = append(dirs, d)
			containers++
		}
	}
	if containers == 0 {
		t.Fatal("found no container tmpfs to search")
	}

	// Control: a marker written to a file under root is found.
	ctl := filepath.Join(root, "control")
	if err := os.WriteFile(ctl, []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	if hits := findMarker(t, []string{root}, needles); len(hits) != 1 || hits[0] != ctl {
		t.Fatalf("control: got %v; want [%s]", hits, ctl)
	}
	os.Remove(ctl)

	if hits := findMarker(t, dirs, needles); len(hits) > 0 {
		t.Errorf("marker found in %v", hits)
	}
}
