package runc

import (
	"crypto/sha256"
	"debug/elf"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// An image is a directory holding rootfs/ (shared read-only by every
// container started from it) and manifest.json and digest beside it. What
// goes into the rootfs is data: a Manifest. Adding an image with a provider
// CLI is adding a manifest file to images/, not code.

//go:embed images/*.json
var manifests embed.FS

// Manifest lists what an image's rootfs holds.
type Manifest struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
	// Dirs are created empty: mount points and their parents. A tmpfs
	// mounted on one takes its mode, so /tmp is 1777.
	Dirs []ManifestDir `json:"dirs"`
	// Files are copied in. From is a host path, or "@polydev" for the
	// static polydev binary given to Build.
	Files []ManifestFile `json:"files"`
}

// ManifestDir is one directory of an image.
type ManifestDir struct {
	Path string `json:"path"`
	Mode string `json:"mode,omitempty"` // octal; default "0755"
}

// ManifestFile is one file of an image.
type ManifestFile struct {
	From string `json:"from"`
	To   string `json:"to"`
	Mode string `json:"mode"` // octal, e.g. "0755"
}

// Images lists the built-in image names.
func Images() []string {
	ents, _ := manifests.ReadDir("images")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	return out
}

// LoadManifest returns the built-in manifest called name.
func LoadManifest(name string) (Manifest, error) {
	b, err := manifests.ReadFile("images/" + name + ".json")
	if err != nil {
		return Manifest{}, fmt.Errorf("image %q: no such manifest (have %s)", name, strings.Join(Images(), ", "))
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("image %q: manifest: %w", name, err)
	}
	return m, nil
}

// BuildResult describes a built image.
type BuildResult struct {
	Dir    string // the image directory; RootFS is Dir/rootfs
	Digest string // "sha256:…" over the rootfs tree (see Digest)
	Bytes  int64  // total size of the rootfs files
	Files  int
}

// RootFS is the rootfs of the image in dir.
func RootFS(dir string) string { return filepath.Join(dir, "rootfs") }

// Build makes the image m in dir (replacing what was there) with binary as
// "@polydev". The result is reproducible: the same inputs give the same
// rootfs bytes, modes and times (every time is the Unix epoch), so the same
// Digest.
func Build(m Manifest, binary, dir string) (BuildResult, error) {
	if err := checkStatic(binary); err != nil {
		return BuildResult{}, err
	}
	tmp := dir + ".building"
	_ = os.RemoveAll(tmp)
	root := filepath.Join(tmp, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return BuildResult{}, fmt.Errorf("image: %w", err)
	}
	fail := func(err error) (BuildResult, error) {
		_ = os.RemoveAll(tmp)
		return BuildResult{}, fmt.Errorf("image %s: %w", m.Name, err)
	}
	dirModes := map[string]os.FileMode{}
	for _, d := range m.Dirs {
		mode := uint64(0o755)
		if d.Mode != "" {
			var err error
			if mode, err = strconv.ParseUint(d.Mode, 8, 32); err != nil {
				return fail(fmt.Errorf("dir %s: mode %q: %w", d.Path, d.Mode, err))
			}
		}
		p := filepath.Join(root, cleanIn(d.Path))
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fail(err)
		}
		dirModes[p] = fileMode(mode)
	}
	for _, f := range m.Files {
		from := f.From
		if from == "@polydev" {
			from = binary
		}
		mode, err := strconv.ParseUint(f.Mode, 8, 32)
		if err != nil {
			return fail(fmt.Errorf("file %s: mode %q: %w", f.To, f.Mode, err))
		}
		to := filepath.Join(root, cleanIn(f.To))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return fail(err)
		}
		if err := copyFile(from, to, fileMode(mode)); err != nil {
			return fail(err)
		}
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), append(mb, '\n'), 0o644); err != nil {
		return fail(err)
	}
	// Fix modes and times for reproducibility, deepest first.
	var paths []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	epoch := time.Unix(0, 0)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return fail(err)
		}
		if fi.IsDir() {
			mode, ok := dirModes[p]
			if !ok {
				mode = 0o755
			}
			if err := os.Chmod(p, mode); err != nil {
				return fail(err)
			}
		}
		if err := os.Lchown(p, 0, 0); err != nil && !errors.Is(err, os.ErrPermission) {
			return fail(err)
		}
		if err := os.Chtimes(p, epoch, epoch); err != nil {
			return fail(err)
		}
	}
	digest, size, files, err := Digest(root)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "digest"), []byte(digest+"\n"), 0o644); err != nil {
		return fail(err)
	}
	// The image directory must be traversable by the containers' mapped
	// users.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail(err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	return BuildResult{Dir: dir, Digest: digest, Bytes: size, Files: files}, nil
}

// Digest hashes a rootfs tree: every entry's path, type, mode, size, time
// and content, in path order. Two rootfs trees with the same digest are the
// same image.
func Digest(root string) (digest string, bytes int64, files int, err error) {
	h := sha256.New()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", path.Clean("/"+filepath.ToSlash(rel)), fi.Mode().String(), fi.Size(), fi.ModTime().Unix())
		if fi.Mode().IsRegular() {
			files++
			bytes += fi.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			fh := sha256.New()
			if _, err := io.Copy(fh, f); err != nil {
				return err
			}
			h.Write(fh.Sum(nil))
		}
		return nil
	})
	if err != nil {
		return "", 0, 0, fmt.Errorf("image digest: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), bytes, files, nil
}

func cleanIn(p string) string { return filepath.FromSlash(strings.TrimPrefix(path.Clean("/"+p), "/")) }

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(to, mode)
}

// checkStatic refuses a binary that needs a dynamic loader: the rootfs has
// no libc. Build it with CGO_ENABLED=0.
func checkStatic(binary string) error {
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("image: binary %s: %w", binary, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("image: %s is dynamically linked; build it with CGO_ENABLED=0", binary)
		}
	}
	return nil
}

// fileMode converts octal permission bits, with sticky, setuid and setgid
// in their Unix places, to an os.FileMode.
func fileMode(m uint64) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	return mode
}
