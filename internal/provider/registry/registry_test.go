package registry

import (
	"strings"
	"testing"

	"polydev/internal/provider"
)

func TestNew(t *testing.T) {
	t.Parallel()
	for _, name := range Names {
		p, err := New(name, provider.Config{})
		if err != nil {
			t.Fatalf("New(%q): %v", name, err)
		}
		if got := p.Name(); got != name {
			t.Errorf("New(%q).Name() = %q; want %q", name, got, name)
		}
	}
}

func TestNewUnknown(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "OpenAI", "mistral"} {
		p, err := New(name, provider.Config{})
		if err == nil {
			t.Fatalf("New(%q) = %v, nil; want an error", name, p)
		}
		if !strings.Contains(err.Error(), "unknown provider") || !strings.Contains(err.Error(), "openai, anthropic, google") {
			t.Errorf("New(%q) error = %q; want it to say the provider is unknown and list the known ones", name, err)
		}
	}
}
