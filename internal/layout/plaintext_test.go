package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The control plane relays and stores ciphertext; in no mode may its code
// open one. It may only check shapes and handle its own auth hashes. This
// test reads every non-test file of internal/controlplane and lists the
// internal/crypto functions it calls: anything that decrypts, unwraps or
// handles a runtime key would fail here. It also forbids the packages that
// handle plaintext: provider adapters and the worker's logic are reached
// only through the runtime interfaces.
func TestControlPlaneCannotDecrypt(t *testing.T) {
	allowed := map[string]bool{
		"CheckEnvelopeText": true, "CheckSealedText": true, "SealedTextSuite": true, "Code": true,
		"HashAuthKey": true, "VerifyAuthKey": true, "DummyAuthHash": true, "FakeKDFParams": true,
		"ParseKDFParams": true, "ParsePublicKey": true, "ErrWeakKDFParams": true,
	}
	forbiddenImports := []string{"polydev/internal/provider/", "polydev/internal/runtime/remote", "polydev/internal/client"}
	dir := filepath.Join(repoRoot(t), "internal", "controlplane")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	files := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		local := ""
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			for _, bad := range forbiddenImports {
				if strings.HasPrefix(path, bad) || path == strings.TrimSuffix(bad, "/") {
					t.Errorf("%s imports %s, which handles plaintext or client keys", name, path)
				}
			}
			if path == "polydev/internal/crypto" {
				local = "crypto"
				if imp.Name != nil {
					local = imp.Name.Name
				}
			}
		}
		if local == "" {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == local {
				used[sel.Sel.Name] = true
			}
			return true
		})
	}
	if files == 0 {
		t.Fatal("no control plane files found; the test is looking in the wrong place")
	}
	var names []string
	for n := range used {
		names = append(names, n)
		if !allowed[n] {
			t.Errorf("the control plane uses crypto.%s; it may only check shapes and its own auth hashes", n)
		}
	}
	sort.Strings(names)
	if !used["CheckSealedText"] || !used["VerifyAuthKey"] {
		t.Fatalf("expected the control plane to check grants and auth keys; it uses %v — is the parse broken?", names)
	}
	t.Logf("control plane uses crypto.%s", strings.Join(names, ", crypto."))
}
