package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"polydev/internal/buildinfo"
)

func runVersion(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "version [-json]", "Prints the build's version, VCS revision, Go version and platform.")
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	info := buildinfo.Read()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	_, err := fmt.Fprintln(e.stdout, info)
	return err
}
