package runc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/runctest"
)

// The same inputs give the same rootfs digest, whatever the inputs' file
// times and wherever the image is written; a changed input changes it.
func TestImageReproducible(t *testing.T) {
	image(t)
	m, err := runc.LoadManifest("runtime")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyBin := func(name string, mtime time.Time, flip bool) string {
		b, err := os.ReadFile(runctest.Binary(t))
		if err != nil {
			t.Fatal(err)
		}
		if flip {
			b[len(b)/2] ^= 1
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, err := runc.Build(m, copyBin("a", time.Now(), false), filepath.Join(dir, "img-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := runc.Build(m, copyBin("b", time.Unix(1e9, 0), false), filepath.Join(dir, "elsewhere", "img-b"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Errorf("same inputs: digests %s and %s differ", a.Digest, b.Digest)
	}
	if got, err := os.ReadFile(filepath.Join(b.Dir, "digest")); err != nil || strings.TrimSpace(string(got)) != b.Digest {
		t.Errorf("digest file: got %q, %v; want %s", got, err, b.Digest)
	}
	again, _, _, err := runc.Digest(runc.RootFS(a.Dir))
	if err != nil || again != a.Digest {
		t.Errorf("re-hashing the built rootfs: got %s, %v; want %s", again, err, a.Digest)
	}
	c, err := runc.Build(m, copyBin("c", time.Now(), true), filepath.Join(dir, "img-c"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest {
		t.Error("a changed binary gives the same digest")
	}
	// Only what the manifest lists is in the rootfs.
	var files []string
	filepath.Walk(runc.RootFS(a.Dir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(runc.RootFS(a.Dir), p)
			files = append(files, rel)
		}
		return nil
	})
	if strings.Join(files, ",") != "etc/ssl/certs/ca-certificates.crt,polydev" {
		t.Errorf("rootfs files: got %v", files)
	}
	if fi, err := os.Stat(filepath.Join(runc.RootFS(a.Dir), "tmp")); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp mode: got %v, %v; want 1777", fi.Mode(), err)
	}
	t.Logf("runtime image: %d files, %.1f MiB, %s", a.Files, float64(a.Bytes)/(1<<20), a.Digest)
}

// A dynamically linked binary is refused: the rootfs has no libc.
func TestImageRefusesDynamicBinary(t *testing.T) {
	m, err := runc.LoadManifest("runtime")
	if err != nil {
		t.Fatal(err)
	}
	_, err = runc.Build(m, "/bin/sh", filepath.Join(t.TempDir(), "img"))
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("building with /bin/sh: got %v; want a dynamically-linked error", err)
	}
}
