package layout

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

type pkg struct {
	dir     string
	doc     bool
	imports map[string]bool
}

// packages parses every non-test Go file of the module, by directory.
func packages(t *testing.T) map[string]*pkg {
	t.Helper()
	root := repoRoot(t)
	out := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		p := out[rel]
		if p == nil {
			p = &pkg{dir: rel, imports: map[string]bool{}}
			out[rel] = p
		}
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			p.doc = true
		}
		for _, imp := range f.Imports {
			s, _ := strconv.Unquote(imp.Path.Value)
			p.imports[s] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 3 {
		t.Fatalf("found only %d packages; the walk is broken", len(out))
	}
	return out
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range packages(t) {
		if !p.doc {
			t.Errorf("package %s has no package doc comment", p.dir)
		}
	}
}

// Only internal/crypto handles raw keys: no other package may reach for
// the primitives that would let it.
func TestOnlyCryptoUsesPrimitives(t *testing.T) {
	primitives := []string{"crypto/aes", "crypto/cipher", "crypto/ed25519", "crypto/hpke", "crypto/hkdf", "crypto/pbkdf2", "crypto/mlkem",
		"golang.org/x/crypto/argon2", "golang.org/x/crypto/chacha20poly1305", "golang.org/x/crypto/nacl/box"}
	for _, p := range packages(t) {
		if filepath.ToSlash(p.dir) == "internal/crypto" {
			continue
		}
		for _, prim := range primitives {
			if p.imports[prim] {
				t.Errorf("%s imports %s; key handling belongs in internal/crypto", p.dir, prim)
			}
		}
	}
}

// No package named like a junk drawer.
func TestNoJunkDrawerPackages(t *testing.T) {
	for _, p := range packages(t) {
		switch filepath.Base(p.dir) {
		case "util", "utils", "common", "helpers", "misc", "shared":
			t.Errorf("package %s: name it for what it owns", p.dir)
		}
	}
}
