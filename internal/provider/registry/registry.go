// Package registry builds a provider adapter from its name, so the code
// that runs chats (the runtime worker) holds one switch, not three imports.
package registry

import (
	"fmt"

	"polydev/internal/provider"
	"polydev/internal/provider/anthropic"
	"polydev/internal/provider/google"
	"polydev/internal/provider/openai"
)

// Names lists the providers New knows, in a stable order.
var Names = []string{provider.OpenAI, provider.Anthropic, provider.Google}

// New returns the adapter for name ("openai", "anthropic" or "google")
// built from cfg. An unknown name is an error that lists the known ones.
func New(name string, cfg provider.Config) (provider.Provider, error) {
	switch name {
	case provider.OpenAI:
		return openai.New(cfg), nil
	case provider.Anthropic:
		return anthropic.New(cfg), nil
	case provider.Google:
		return google.New(cfg), nil
	}
	return nil, fmt.Errorf("unknown provider %q (known: openai, anthropic, google)", name)
}
