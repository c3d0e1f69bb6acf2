package emulator_test

// Faithfulness: the providers' official Go SDKs, unchanged, against the
// emulator over loopback HTTP. If an SDK parses the emulator's answers, its
// streams, usage, finish reasons and typed errors, so do adapters built on
// it.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genai"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
)

const prompt = "hello faithful world"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openAIClient(root, key string, retries int) openai.Client {
	return openai.NewClient(
		openaioption.WithBaseURL(emulator.BaseURL(root, provider.OpenAI)),
		openaioption.WithAPIKey(key),
		openaioption.WithMaxRetries(retries),
	)
}

func TestOpenAISDK(t *testing.T) {
	t.Parallel()
	em, root := serve(t, emulator.Options{})
	client := openAIClient(root, "test-key", 0)
	want := emulator.ReplyText(prompt, -1)
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("answer briefly"), openai.UserMessage(prompt)},
	}

	t.Run("chat", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctxT(t), params)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Choices[0].Message.Content; got != want {
			t.Errorf("content %q; want %q", got, want)
		}
		if resp.Choices[0].FinishReason != "stop" || resp.Usage.PromptTokens != 5 || resp.Usage.CompletionTokens != 11 || resp.Usage.TotalTokens != 16 {
			t.Errorf("finish %q usage %+v; want stop 5+11", resp.Choices[0].FinishReason, resp.Usage)
		}
	})

	t.Run("chat stream", func(t *testing.T) {
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		p.MaxCompletionTokens = openai.Int(4)
		stream := client.Chat.Completions.NewStreaming(ctxT(t), p)
		var acc openai.ChatCompletionAccumulator
		var deltas int
		for stream.Next() {
			c := stream.Current()
			acc.AddChunk(c)
			if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
				deltas++
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != "hello faithful world lorem" || deltas != 4 {
			t.Errorf("content %q in %d deltas; want 4 tokens", got, deltas)
		}
		if acc.Choices[0].FinishReason != "length" || acc.Usage.PromptTokens != 5 || acc.Usage.CompletionTokens != 4 {
			t.Errorf("finish %q usage %+v; want length 5+4", acc.Choices[0].FinishReason, acc.Usage)
		}
	})

	t.Run("chat stream cut", func(t *testing.T) {
		p := params
		p.Model = "gpt-4o-mini+cut_after=2"
		stream := client.Chat.Completions.NewStreaming(ctxT(t), p)
		var text strings.Builder
		for stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
		}
		if stream.Err() == nil || text.String() != "hello faithful" {
			t.Errorf("cut stream: err %v, text %q; want an error after %q", stream.Err(), text.String(), "hello faithful")
		}
	})

	t.Run("chat stream mid-stream error", func(t *testing.T) {
		p := params
		p.Model = "gpt-4o-mini+error_after=1"
		stream := client.Chat.Completions.NewStreaming(ctxT(t), p)
		for stream.Next() {
		}
		if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "server_error") {
			t.Errorf("err %v; want the streamed server_error", err)
		}
	})

	t.Run("responses", func(t *testing.T) {
		resp, err := client.Responses.New(ctxT(t), responses.ResponseNewParams{
			Model:        "gpt-4o-mini",
			Instructions: openai.String("answer briefly"),
			Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.OutputText() != want || resp.Status != "completed" || resp.Usage.InputTokens != 5 || resp.Usage.OutputTokens != 11 {
			t.Errorf("text %q status %q usage %+v", resp.OutputText(), resp.Status, resp.Usage)
		}
	})

	t.Run("responses stream", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctxT(t), responses.ResponseNewParams{
			Model:           "gpt-4o-mini",
			Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)},
			MaxOutputTokens: openai.Int(16),
		})
		var text strings.Builder
		var final responses.Response
		for stream.Next() {
			ev := stream.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed", "response.incomplete":
				final = ev.Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != want || final.OutputText() != want || final.Status != "completed" || final.Usage.OutputTokens != 11 {
			t.Errorf("deltas %q final %q status %q usage %+v", text.String(), final.OutputText(), final.Status, final.Usage)
		}
	})

	errCases := []struct {
		name, key, model string
		status           int
		typ, code        string
		retryAfter       string
	}{
		{"401", "invalid-key", "gpt-4o-mini", 401, "invalid_request_error", "invalid_api_key", ""},
		{"429", "k", "gpt-4o-mini+fail=429;retry_after=2s", 429, "requests", "rate_limit_exceeded", "2"},
		{"500", "k", "gpt-4o-mini+fail=500", 500, "server_error", "", ""},
		{"503", "k", "gpt-4o-mini+fail=503", 503, "server_error", "", ""},
	}
	for _, tc := range errCases {
		t.Run("error "+tc.name, func(t *testing.T) {
			c := openAIClient(root, tc.key, 0)
			p := params
			p.Model = tc.model
			for _, stream := range []bool{false, true} {
				var err error
				if stream {
					s := c.Chat.Completions.NewStreaming(ctxT(t), p)
					for s.Next() {
					}
					err = s.Err()
				} else {
					_, err = c.Chat.Completions.New(ctxT(t), p)
				}
				var apierr *openai.Error
				if !errors.As(err, &apierr) {
					t.Fatalf("stream=%v: err %T %v; want *openai.Error", stream, err, err)
				}
				if apierr.StatusCode != tc.status || apierr.Type != tc.typ || apierr.Code != tc.code || apierr.Response.Header.Get("Retry-After") != tc.retryAfter {
					t.Errorf("stream=%v: status %d type %q code %q retry-after %q; want %d %q %q %q", stream, apierr.StatusCode, apierr.Type, apierr.Code,
						apierr.Response.Header.Get("Retry-After"), tc.status, tc.typ, tc.code, tc.retryAfter)
				}
			}
		})
	}

	t.Run("sdk retries until fail_first is spent", func(t *testing.T) {
		before := em.Stats().Requests
		c := openAIClient(root, "k", 2)
		p := params
		p.Model = "gpt-4o-mini+fail=500;fail_first=2;retry_after=10ms;id=openai-retry"
		resp, err := c.Chat.Completions.New(ctxT(t), p)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Choices[0].Message.Content != want {
			t.Errorf("content %q", resp.Choices[0].Message.Content)
		}
		if n := em.Stats().Requests - before; n != 3 {
			t.Errorf("%d requests; want 3 (two failures, one success)", n)
		}
	})
}

func anthropicClient(root, key string) anthropic.Client {
	return anthropic.NewClient(
		anthropicoption.WithBaseURL(emulator.BaseURL(root, provider.Anthropic)),
		anthropicoption.WithAPIKey(key),
		anthropicoption.WithMaxRetries(0),
	)
}

func TestAnthropicSDK(t *testing.T) {
	t.Parallel()
	em, root := serve(t, emulator.Options{})
	client := anthropicClient(root, "test-key")
	want := emulator.ReplyText(prompt, -1)
	params := anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 1024,
		System:    []anthropic.TextBlockParam{{Text: "answer briefly"}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	}

	t.Run("messages", func(t *testing.T) {
		msg, err := client.Messages.New(ctxT(t), params)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != want {
			t.Fatalf("content %+v; want %q", msg.Content, want)
		}
		if msg.StopReason != anthropic.StopReasonEndTurn || msg.Usage.InputTokens != 5 || msg.Usage.OutputTokens != 11 {
			t.Errorf("stop %q usage %+v", msg.StopReason, msg.Usage)
		}
		recs := em.Records()
		if r := recs[len(recs)-1]; r.System != "answer briefly" || r.MaxTokens != 1024 {
			t.Errorf("record %+v", r)
		}
	})

	t.Run("messages stream", func(t *testing.T) {
		p := params
		p.MaxTokens = 4
		stream := client.Messages.NewStreaming(ctxT(t), p)
		var msg anthropic.Message
		var deltas int
		for stream.Next() {
			ev := stream.Current()
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
			if d, ok := ev.AsAny().(anthropic.ContentBlockDeltaEvent); ok && d.Delta.Text != "" {
				deltas++
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if msg.Content[0].Text != "hello faithful world lorem" || deltas != 4 {
			t.Errorf("text %q in %d deltas", msg.Content[0].Text, deltas)
		}
		if msg.StopReason != anthropic.StopReasonMaxTokens || msg.Usage.InputTokens != 5 || msg.Usage.OutputTokens != 4 {
			t.Errorf("stop %q usage %+v", msg.StopReason, msg.Usage)
		}
	})

	t.Run("mid-stream overloaded", func(t *testing.T) {
		p := params
		p.Model = "claude-sonnet-4-5+error_after=2"
		stream := client.Messages.NewStreaming(ctxT(t), p)
		var text strings.Builder
		for stream.Next() {
			if d, ok := stream.Current().AsAny().(anthropic.ContentBlockDeltaEvent); ok {
				text.WriteString(d.Delta.Text)
			}
		}
		var apierr *anthropic.Error
		if !errors.As(stream.Err(), &apierr) || apierr.Type() != anthropic.ErrorTypeOverloadedError {
			t.Fatalf("err %v; want *anthropic.Error of type overloaded_error", stream.Err())
		}
		if text.String() != "hello faithful" {
			t.Errorf("text before the error %q", text.String())
		}
	})

	t.Run("stream cut", func(t *testing.T) {
		p := params
		p.Model = "claude-sonnet-4-5+cut_after=1"
		stream := client.Messages.NewStreaming(ctxT(t), p)
		var stops int
		for stream.Next() {
			if _, ok := stream.Current().AsAny().(anthropic.MessageStopEvent); ok {
				stops++
			}
		}
		if stream.Err() == nil || stops != 0 {
			t.Errorf("err %v, %d message_stop; want an error and none", stream.Err(), stops)
		}
	})

	errCases := []struct {
		name, key, model string
		status           int
		typ              anthropic.ErrorType
		retryAfter       string
	}{
		{"401", "invalid-key", "claude-sonnet-4-5", 401, anthropic.ErrorTypeAuthenticationError, ""},
		{"429", "k", "claude-sonnet-4-5+fail=429", 429, anthropic.ErrorTypeRateLimitError, "1"},
		{"500", "k", "claude-sonnet-4-5+fail=500", 500, anthropic.ErrorTypeAPIError, ""},
		{"529", "k", "claude-sonnet-4-5+fail=529;retry_after=3s", 529, anthropic.ErrorTypeOverloadedError, "3"},
	}
	for _, tc := range errCases {
		t.Run("error "+tc.name, func(t *testing.T) {
			c := anthropicClient(root, tc.key)
			p := params
			p.Model = anthropic.Model(tc.model)
			for _, stream := range []bool{false, true} {
				var err error
				if stream {
					s := c.Messages.NewStreaming(ctxT(t), p)
					for s.Next() {
					}
					err = s.Err()
				} else {
					_, err = c.Messages.New(ctxT(t), p)
				}
				var apierr *anthropic.Error
				if !errors.As(err, &apierr) {
					t.Fatalf("stream=%v: err %T %v; want *anthropic.Error", stream, err, err)
				}
				if apierr.StatusCode != tc.status || apierr.Type() != tc.typ || apierr.Response.Header.Get("Retry-After") != tc.retryAfter || apierr.RequestID == "" {
					t.Errorf("stream=%v: status %d type %q retry-after %q request-id %q; want %d %q %q", stream, apierr.StatusCode, apierr.Type(),
						apierr.Response.Header.Get("Retry-After"), apierr.RequestID, tc.status, tc.typ, tc.retryAfter)
				}
			}
		})
	}
}

func genaiClient(t *testing.T, root, key string) *genai.Client {
	c, err := genai.NewClient(context.Background(), &genai.ClientConfig{
		APIKey:      key,
		Backend:     genai.BackendGeminiAPI,
		HTTPClient:  &http.Client{},
		HTTPOptions: genai.HTTPOptions{BaseURL: emulator.BaseURL(root, provider.Google) + "/", APIVersion: "v1beta"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenaiSDK(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{})
	client := genaiClient(t, root, "test-key")
	want := emulator.ReplyText(prompt, -1)
	cfg := &genai.GenerateContentConfig{SystemInstruction: genai.NewContentFromText("answer briefly", genai.RoleUser)}

	t.Run("generateContent", func(t *testing.T) {
		resp, err := client.Models.GenerateContent(ctxT(t), "gemini-2.5-flash", genai.Text(prompt), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Text() != want || resp.Candidates[0].FinishReason != genai.FinishReasonStop {
			t.Errorf("text %q finish %q", resp.Text(), resp.Candidates[0].FinishReason)
		}
		if u := resp.UsageMetadata; u.PromptTokenCount != 5 || u.CandidatesTokenCount != 11 || u.TotalTokenCount != 16 {
			t.Errorf("usage %+v", u)
		}
	})

	t.Run("streamGenerateContent", func(t *testing.T) {
		c := *cfg
		c.MaxOutputTokens = 4
		var text strings.Builder
		var last *genai.GenerateContentResponse
		for resp, err := range client.Models.GenerateContentStream(ctxT(t), "gemini-2.5-flash", genai.Text(prompt), &c) {
			if err != nil {
				t.Fatal(err)
			}
			text.WriteString(resp.Text())
			last = resp
		}
		if text.String() != "hello faithful world lorem" || last.Candidates[0].FinishReason != genai.FinishReasonMaxTokens {
			t.Errorf("text %q finish %q", text.String(), last.Candidates[0].FinishReason)
		}
		if u := last.UsageMetadata; u.PromptTokenCount != 5 || u.CandidatesTokenCount != 4 {
			t.Errorf("usage %+v", u)
		}
	})

	t.Run("stream cut", func(t *testing.T) {
		var err error
		var n int
		for _, e := range client.Models.GenerateContentStream(ctxT(t), "gemini-2.5-flash+cut_after=2;tps=1000", genai.Text(prompt), cfg) {
			if e != nil {
				err = e
				break
			}
			n++
		}
		if err == nil || n != 2 {
			t.Errorf("err %v after %d chunks; want an error after 2", err, n)
		}
	})

	errCases := []struct {
		name, key, model string
		code             int
		status           string
	}{
		{"bad key", "invalid-key", "gemini-2.5-flash", 400, "INVALID_ARGUMENT"},
		{"429", "k", "gemini-2.5-flash+fail=429", 429, "RESOURCE_EXHAUSTED"},
		{"500", "k", "gemini-2.5-flash+fail=500", 500, "INTERNAL"},
		{"503", "k", "gemini-2.5-flash+fail=503", 503, "UNAVAILABLE"},
	}
	for _, tc := range errCases {
		t.Run("error "+tc.name, func(t *testing.T) {
			c := genaiClient(t, root, tc.key)
			for _, stream := range []bool{false, true} {
				var err error
				if stream {
					for _, e := range c.Models.GenerateContentStream(ctxT(t), tc.model, genai.Text(prompt), cfg) {
						if e != nil {
							err = e
							break
						}
					}
				} else {
					_, err = c.Models.GenerateContent(ctxT(t), tc.model, genai.Text(prompt), cfg)
				}
				var apierr genai.APIError
				if !errors.As(err, &apierr) {
					t.Fatalf("stream=%v: err %T %v; want genai.APIError", stream, err, err)
				}
				if apierr.Code != tc.code || apierr.Status != tc.status {
					t.Errorf("stream=%v: %d %q; want %d %q", stream, apierr.Code, apierr.Status, tc.code, tc.status)
				}
				if tc.code == 429 && !strings.Contains(apierr.Error(), "RetryInfo") {
					t.Errorf("429 without a RetryInfo detail: %v", apierr.Details)
				}
			}
		})
	}
}
