package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"polydev/internal/runtime/runc"
)

func runImage(_ context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintf(e.stderr, "Usage: polydev image build NAME [flags]\n\nImages: %s\n", strings.Join(runc.Images(), ", "))
		return errUsage
	}
	args = args[1:]
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(e.stderr, "Usage: polydev image build NAME [flags]\n\nImages: %s\n", strings.Join(runc.Images(), ", "))
		return errUsage
	}
	name := args[0]
	fs := newFlagSet(e, "image build NAME [flags]", `
Builds a runtime container image: a directory holding rootfs/ (shared
read-only by the containers started from it), the manifest it was made from,
and the digest of the rootfs. The rootfs holds only what the image's
manifest lists — for "runtime", the static polydev binary as /polydev and the
CA certificates. The same inputs always give the same digest.

The binary must be statically linked (build it with
CGO_ENABLED=0 go build -trimpath -o polydev ./cmd/polydev); by default it is
the polydev running this command.`)
	out := fs.String("out", "", "image directory to write (default /var/lib/polydev/images/NAME)")
	binary := fs.String("binary", "", "the static polydev binary to put in (default: this executable)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	m, err := runc.LoadManifest(name)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join("/var/lib/polydev/images", name)
	}
	if *binary == "" {
		if *binary, err = os.Executable(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	start := time.Now()
	res, err := runc.Build(m, *binary, *out)
	if err != nil {
		return err
	}
	took := time.Since(start)
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]any{
			"image": name, "dir": res.Dir, "digest": res.Digest, "bytes": res.Bytes, "files": res.Files, "build_ms": took.Milliseconds(),
		})
	}
	_, err = fmt.Fprintf(e.stdout, "image %s: %s\n  digest %s\n  %d files, %.1f MiB, built in %s\n",
		name, res.Dir, res.Digest, res.Files, float64(res.Bytes)/(1<<20), took.Round(time.Millisecond))
	return err
}
