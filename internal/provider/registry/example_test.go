package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
)

// A chat stream from the provider a user linked, here against the
// emulator on loopback.
func ExampleNew() {
	em := emulator.New(emulator.Options{})
	defer em.Close()
	srv := httptest.NewServer(em.Handler())
	defer srv.Close()

	p, err := registry.New(provider.Anthropic, provider.Config{
		BaseURL:    emulator.BaseURL(srv.URL, provider.Anthropic),
		HTTPClient: srv.Client(), // in production: the client bound to the user's egress port
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p = provider.WithRetry(p, provider.DefaultRetryPolicy)

	s, err := p.Stream(context.Background(), provider.Credential{APIKey: "sk-ant-example"}, provider.Request{
		Model: "claude-sonnet-4-5",
		Messages: []provider.Message{
			{Role: provider.RoleSystem, Content: "Answer briefly."},
			{Role: provider.RoleUser, Content: "hello from polydev"},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println("\nbroke off:", err)
			return
		}
		fmt.Print(c.Text)
		if c.FinishReason != "" {
			fmt.Printf("\n[%s, %d tokens in, %d out]\n", c.FinishReason, c.Usage.InputTokens, c.Usage.OutputTokens)
		}
	}
	// Output:
	// hello from polydev lorem ipsum dolor sit amet consectetur adipiscing elit
	// [stop, 5 tokens in, 11 out]
}
