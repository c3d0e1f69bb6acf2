package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"polydev/internal/provider"
)

// Anthropic Messages: https://docs.anthropic.com/en/api/messages and
// /en/api/messages-streaming. Errors are {"type":"error","error":{"type",
// "message"},"request_id"}; request ids travel in request-id.

// anthropicError answers with Anthropic's error body.
func (c *call) anthropicError(status int, typ, msg string) {
	h := c.w.Header()
	if d, ok := c.retryAfter(status); ok && c.injected {
		h.Set("Retry-After", retryAfterSeconds(d))
		h.Set("Retry-After-Ms", fmt.Sprint(d.Milliseconds()))
	}
	writeJSON(c.w, status, map[string]any{
		"type":       "error",
		"error":      map[string]string{"type": typ, "message": msg},
		"request_id": c.w.Header().Get("Request-Id"),
	})
	c.end(status, OutcomeError)
}

// anthropicFailure is Anthropic's error for an injected status.
func anthropicFailure(status int) (int, string, string) {
	switch status {
	case 400:
		return 400, "invalid_request_error", "Invalid request (emulator: fail=400)."
	case 401:
		return 401, "authentication_error", "invalid x-api-key"
	case 403:
		return 403, "permission_error", "Your API key does not have permission to use the specified resource."
	case 404:
		return 404, "not_found_error", "Not found (emulator: fail=404)."
	case 413:
		return 413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
	case 429:
		return 429, "rate_limit_error", "This request would exceed the rate limit for your organization (org-emulator) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."
	case 500:
		return 500, "api_error", "Internal server error"
	case 503:
		return 503, "api_error", "Service Unavailable"
	case 529:
		return 529, "overloaded_error", "Overloaded"
	}
	typ := "invalid_request_error"
	if status >= 500 {
		typ = "api_error"
	}
	return status, typ, http.StatusText(status) + " (emulator: fail)."
}

func (e *Emulator) anthropicMessages(w http.ResponseWriter, r *http.Request) {
	ctx, c := e.begin(w, r, provider.Anthropic)
	defer c.finally()
	w.Header().Set("Request-Id", newID("req_011CEmu", 16))
	w.Header().Set("Anthropic-Organization-Id", "00000000-0000-4000-8000-000000000000")

	key := r.Header.Get("X-Api-Key")
	if key == "" {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			key = strings.TrimSpace(tok)
		}
	}
	if key == "" {
		c.anthropicError(401, "authentication_error", "x-api-key header is required")
		return
	}
	if !e.keyOK(key) {
		c.anthropicError(401, "authentication_error", "invalid x-api-key")
		return
	}
	if r.Header.Get("Anthropic-Version") == "" {
		c.anthropicError(400, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	var req struct {
		Model     *string `json:"model"`
		MaxTokens *int    `json:"max_tokens"`
		Messages  *[]struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		System      json.RawMessage `json:"system"`
		Stream      bool            `json:"stream"`
		Temperature *float64        `json:"temperature"`
	}
	if err := decode(r, &req); err != nil {
		c.anthropicError(400, "invalid_request_error", "There was an error parsing the body of your request: "+err.Error())
		return
	}
	switch {
	case req.Model == nil || *req.Model == "":
		c.anthropicError(400, "invalid_request_error", "model: Field required")
		return
	case req.MaxTokens == nil:
		c.anthropicError(400, "invalid_request_error", "max_tokens: Field required")
		return
	case *req.MaxTokens < 1:
		c.anthropicError(400, "invalid_request_error", "max_tokens: Input should be greater than or equal to 1")
		return
	case req.Messages == nil:
		c.anthropicError(400, "invalid_request_error", "messages: Field required")
		return
	case len(*req.Messages) == 0:
		c.anthropicError(400, "invalid_request_error", "messages: at least one message is required")
		return
	case req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 1):
		c.anthropicError(400, "invalid_request_error", "temperature: Input should be less than or equal to 1")
		return
	}
	name, suffix := splitModel(*req.Model)
	c.rec.Model = name
	if err := c.knobs(suffix); err != nil {
		c.anthropicError(400, "invalid_request_error", "emulator: "+err.Error())
		return
	}
	var msgs []provider.Message
	if len(req.System) > 0 && string(req.System) != "null" {
		text, err := anthropicContent(req.System)
		if err != nil {
			c.anthropicError(400, "invalid_request_error", "system: "+err.Error())
			return
		}
		c.rec.System = text
		msgs = append(msgs, provider.Message{Role: provider.RoleSystem, Content: text})
	}
	for i, m := range *req.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			if m.Role == "system" {
				c.anthropicError(400, "invalid_request_error", `messages: Unexpected role "system". The Messages API accepts a top-level `+"`system`"+` parameter, not "system" as an input message role.`)
			} else {
				c.anthropicError(400, "invalid_request_error", fmt.Sprintf("messages.%d.role: Input should be 'user' or 'assistant'", i))
			}
			return
		}
		text, err := anthropicContent(m.Content)
		if err != nil {
			c.anthropicError(400, "invalid_request_error", fmt.Sprintf("messages.%d.content: %v", i, err))
			return
		}
		msgs = append(msgs, provider.Message{Role: m.Role, Content: text})
	}
	if c.shouldFail() {
		status, typ, msg := anthropicFailure(c.k.fail)
		c.anthropicError(status, typ, msg)
		return
	}
	c.rec.Messages, c.rec.MaxTokens, c.rec.Temperature, c.rec.Stream = msgs[len(msgs)-len(*req.Messages):], *req.MaxTokens, req.Temperature, req.Stream
	a := plan(msgs, c.k, *req.MaxTokens)
	stop := "end_turn"
	if a.truncated {
		stop = "max_tokens"
	}
	id := newID("msg_01Emu", 20)
	usage := func(out int) map[string]any {
		return map[string]any{"input_tokens": a.input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": out, "service_tier": "standard"}
	}

	if !req.Stream {
		mid, ok := c.runWhole(ctx, len(a.tokens))
		if !ok {
			return
		}
		if mid {
			c.anthropicError(529, "overloaded_error", "Overloaded")
			return
		}
		c.rec.TokensSent = len(a.tokens)
		content := []any{}
		if len(a.tokens) > 0 {
			content = append(content, map[string]any{"type": "text", "text": a.text()})
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": name, "content": content,
			"stop_reason": stop, "stop_sequence": nil, "usage": usage(len(a.tokens)),
		})
		c.end(http.StatusOK, OutcomeComplete)
		return
	}

	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	s := newSSE(w, "\n")
	if s.start(http.StatusOK) != nil ||
		s.event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": name, "content": []any{},
			"stop_reason": nil, "stop_sequence": nil, "usage": usage(1),
		}}) != nil ||
		s.event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}}) != nil ||
		s.event("ping", map[string]any{"type": "ping"}) != nil {
		c.interrupted()
		return
	}
	if !c.run(ctx, len(a.tokens), step{
		token: func(i int) error {
			return s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": delta(a.tokens, i)}})
		},
		midErr: func() error {
			return s.event("error", map[string]any{"type": "error", "error": map[string]string{"type": "overloaded_error", "message": "Overloaded"}, "request_id": w.Header().Get("Request-Id")})
		},
	}) {
		return
	}
	if s.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) != nil ||
		s.event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]any{"output_tokens": len(a.tokens)}}) != nil ||
		s.event("message_stop", map[string]any{"type": "message_stop"}) != nil {
		c.interrupted()
		return
	}
	c.end(http.StatusOK, OutcomeComplete)
}

// anthropicContent is content (or system): a string or a list of blocks,
// whose text blocks are joined.
func anthropicContent(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "", fmt.Errorf("Input should be a valid string or a list of content blocks")
	}
	var texts []string
	for _, b := range blocks {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}
