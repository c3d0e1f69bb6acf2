package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"polydev/internal/provider"
)

// The OpenAI Responses API: one output message of output_text; streamed as
// response.created, response.in_progress, response.output_item.added,
// response.content_part.added, response.output_text.delta…,
// response.output_text.done, response.content_part.done,
// response.output_item.done and response.completed (response.incomplete
// when max_output_tokens cut the answer), each event carrying a
// sequence_number.

func (e *Emulator) openAIResponses(w http.ResponseWriter, r *http.Request) {
	ctx, c := e.begin(w, r, provider.OpenAI)
	defer c.finally()
	var req struct {
		Model           *string         `json:"model"`
		Input           json.RawMessage `json:"input"`
		Instructions    *string         `json:"instructions"`
		Stream          bool            `json:"stream"`
		MaxOutputTokens *int            `json:"max_output_tokens"`
		Temperature     *float64        `json:"temperature"`
	}
	if !c.openAIPrologue(&req, func() (string, bool) {
		if req.Model == nil {
			return "", false
		}
		return *req.Model, true
	}) {
		return
	}
	var msgs []provider.Message
	if req.Instructions != nil && *req.Instructions != "" {
		msgs = append(msgs, provider.Message{Role: provider.RoleSystem, Content: *req.Instructions})
		c.rec.System = *req.Instructions
	}
	var input string
	if err := json.Unmarshal(req.Input, &input); err == nil {
		msgs = append(msgs, provider.Message{Role: provider.RoleUser, Content: input})
	} else {
		var items []struct {
			Type    string          `json:"type"`
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(req.Input, &items); err != nil {
			c.openAIError(400, badRequest("Invalid type for 'input': expected one of a string or array of input items.", "input", "invalid_type"))
			return
		}
		for i, it := range items {
			if it.Type != "" && it.Type != "message" {
				continue
			}
			role, ok := oaRole(it.Role)
			if !ok {
				c.openAIError(400, badRequest(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'assistant', 'system', 'developer', and 'user'.", it.Role), fmt.Sprintf("input[%d].role", i), "invalid_value"))
				return
			}
			text, err := oaContent(it.Content)
			if err != nil {
				c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'input[%d].content': %v.", i, err), fmt.Sprintf("input[%d].content", i), "invalid_type"))
				return
			}
			if role == provider.RoleSystem {
				c.rec.System = strings.TrimSpace(c.rec.System + "\n" + text)
			}
			msgs = append(msgs, provider.Message{Role: role, Content: text})
		}
	}
	if req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 2) {
		c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got %v instead.", *req.Temperature), "temperature", "decimal_above_max_value"))
		return
	}
	maxTokens := 0
	if req.MaxOutputTokens != nil {
		maxTokens = *req.MaxOutputTokens
		if maxTokens < 16 {
			c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got %d instead.", maxTokens), "max_output_tokens", "integer_below_min_value"))
			return
		}
	}
	c.rec.Messages, c.rec.MaxTokens, c.rec.Temperature, c.rec.Stream = msgs, maxTokens, req.Temperature, req.Stream
	a := plan(msgs, c.k, maxTokens)

	respID, msgID := newID("resp_", 48), newID("msg_", 48)
	created := time.Now().Unix()
	temp := 1.0
	if req.Temperature != nil {
		temp = *req.Temperature
	}
	// response builds the response object in the given state.
	response := func(status string, text *string) map[string]any {
		out := []any{}
		var usage any
		var incomplete any
		if text != nil {
			itemStatus := "completed"
			if status == "incomplete" {
				itemStatus = "incomplete"
			}
			out = append(out, map[string]any{
				"id": msgID, "type": "message", "status": itemStatus, "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": *text, "annotations": []any{}, "logprobs": []any{}}},
			})
			usage = map[string]any{
				"input_tokens": a.input, "input_tokens_details": map[string]int{"cached_tokens": 0},
				"output_tokens": len(a.tokens), "output_tokens_details": map[string]int{"reasoning_tokens": 0},
				"total_tokens": a.input + len(a.tokens),
			}
		}
		if status == "incomplete" {
			incomplete = map[string]string{"reason": "max_output_tokens"}
		}
		var maxOut any
		if req.MaxOutputTokens != nil {
			maxOut = *req.MaxOutputTokens
		}
		var instr any
		if req.Instructions != nil {
			instr = *req.Instructions
		}
		return map[string]any{
			"id": respID, "object": "response", "created_at": created, "status": status,
			"background": false, "error": nil, "incomplete_details": incomplete,
			"instructions": instr, "max_output_tokens": maxOut, "model": c.rec.Model,
			"output": out, "parallel_tool_calls": true, "previous_response_id": nil,
			"reasoning": map[string]any{"effort": nil, "summary": nil}, "service_tier": "default",
			"store": true, "temperature": temp, "text": map[string]any{"format": map[string]string{"type": "text"}},
			"tool_choice": "auto", "tools": []any{}, "top_p": 1.0, "truncation": "disabled",
			"usage": usage, "user": nil, "metadata": map[string]any{},
		}
	}
	final := "completed"
	if a.truncated {
		final = "incomplete"
	}
	text := a.text()

	if !req.Stream {
		mid, ok := c.runWhole(ctx, len(a.tokens))
		if !ok {
			return
		}
		if mid {
			_, e := openAIFailure(500, c.rec.Model)
			c.openAIError(500, e)
			return
		}
		c.rec.TokensSent = len(a.tokens)
		writeJSON(w, http.StatusOK, response(final, &text))
		c.end(http.StatusOK, OutcomeComplete)
		return
	}

	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	s := newSSE(w, "\n")
	seq := 0
	send := func(typ string, fields map[string]any) error {
		fields["type"] = typ
		fields["sequence_number"] = seq
		seq++
		return s.event(typ, fields)
	}
	emptyPart := map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}
	if s.start(http.StatusOK) != nil ||
		send("response.created", map[string]any{"response": response("in_progress", nil)}) != nil ||
		send("response.in_progress", map[string]any{"response": response("in_progress", nil)}) != nil ||
		send("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": msgID, "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}}) != nil ||
		send("response.content_part.added", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "part": emptyPart}) != nil {
		c.interrupted()
		return
	}
	if !c.run(ctx, len(a.tokens), step{
		token: func(i int) error {
			return send("response.output_text.delta", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "delta": delta(a.tokens, i), "logprobs": []any{}})
		},
		midErr: func() error {
			return send("error", map[string]any{"code": "server_error", "message": "The server had an error while processing your request. Sorry about that!", "param": nil})
		},
	}) {
		return
	}
	full := map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}
	itemStatus := "completed"
	if a.truncated {
		itemStatus = "incomplete"
	}
	if send("response.output_text.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "text": text, "logprobs": []any{}}) != nil ||
		send("response.content_part.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "part": full}) != nil ||
		send("response.output_item.done", map[string]any{"output_index": 0, "item": map[string]any{"id": msgID, "type": "message", "status": itemStatus, "role": "assistant", "content": []any{full}}}) != nil ||
		send("response."+final, map[string]any{"response": response(final, &text)}) != nil {
		c.interrupted()
		return
	}
	c.end(http.StatusOK, OutcomeComplete)
}
