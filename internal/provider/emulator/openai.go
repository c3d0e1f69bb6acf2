package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"polydev/internal/provider"
)

// OpenAI: https://platform.openai.com/docs/api-reference/chat and
// /docs/api-reference/responses. Errors are {"error":{"message","type",
// "param","code"}}; request ids travel in x-request-id.

type oaError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func strp(s string) *string { return &s }

// openAIError answers with the body OpenAI sends for status.
func (c *call) openAIError(status int, e oaError) {
	h := c.w.Header()
	if d, ok := c.retryAfter(status); ok && c.injected {
		h.Set("Retry-After", retryAfterSeconds(d))
		h.Set("Retry-After-Ms", fmt.Sprint(d.Milliseconds()))
	}
	writeJSON(c.w, status, map[string]any{"error": e})
	c.end(status, OutcomeError)
}

// openAIFailure is OpenAI's error for an injected status.
func openAIFailure(status int, model string) (int, oaError) {
	switch status {
	case 400:
		return 400, oaError{Message: "Invalid request (emulator: fail=400).", Type: "invalid_request_error"}
	case 401:
		return 401, oaError{Message: "Incorrect API key provided: ****. You can find your API key at https://platform.openai.com/account/api-keys.", Type: "invalid_request_error", Code: strp("invalid_api_key")}
	case 403:
		return 403, oaError{Message: "Country, region, or territory not supported", Type: "request_forbidden", Code: strp("unsupported_country_region_territory")}
	case 404:
		return 404, oaError{Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model), Type: "invalid_request_error", Code: strp("model_not_found")}
	case 429:
		return 429, oaError{Message: fmt.Sprintf("Rate limit reached for %s in organization org-emulator on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.", model), Type: "requests", Code: strp("rate_limit_exceeded")}
	case 500:
		return 500, oaError{Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"}
	case 503, 529:
		return 503, oaError{Message: "The engine is currently overloaded, please try again later.", Type: "server_error"}
	}
	typ := "invalid_request_error"
	if status >= 500 {
		typ = "server_error"
	}
	return status, oaError{Message: http.StatusText(status) + " (emulator: fail).", Type: typ}
}

func badRequest(msg, param, code string) oaError {
	e := oaError{Message: msg, Type: "invalid_request_error"}
	if param != "" {
		e.Param = strp(param)
	}
	if code != "" {
		e.Code = strp(code)
	}
	return e
}

// openAIPrologue checks the key, reads the body and sets the knobs. It
// returns false when it has answered.
func (c *call) openAIPrologue(body any, model func() (string, bool)) bool {
	c.w.Header().Set("X-Request-Id", newID("req_", 32))
	c.w.Header().Set("Openai-Version", "2020-10-01")
	c.w.Header().Set("Openai-Organization", "org-emulator")
	auth := c.r.Header.Get("Authorization")
	key, hasBearer := strings.CutPrefix(auth, "Bearer ")
	if !hasBearer || strings.TrimSpace(key) == "" {
		c.openAIError(401, oaError{Message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.", Type: "invalid_request_error"})
		return false
	}
	if !c.e.keyOK(strings.TrimSpace(key)) {
		_, e := openAIFailure(401, "")
		c.openAIError(401, e)
		return false
	}
	if err := decode(c.r, body); err != nil {
		c.openAIError(400, badRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)", "", ""))
		return false
	}
	m, ok := model()
	if !ok || m == "" {
		c.openAIError(400, badRequest("you must provide a model parameter", "", ""))
		return false
	}
	name, suffix := splitModel(m)
	c.rec.Model = name
	if err := c.knobs(suffix); err != nil {
		c.openAIError(400, badRequest("emulator: "+err.Error(), "", ""))
		return false
	}
	if c.shouldFail() {
		status, e := openAIFailure(c.k.fail, name)
		c.openAIError(status, e)
		return false
	}
	return true
}

// oaContent is message content: a string or a list of parts.
func oaContent(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("content must be a string or an array of content parts")
	}
	var texts []string
	for _, p := range parts {
		switch p.Type {
		case "text", "input_text", "output_text":
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

func oaRole(role string) (string, bool) {
	switch role {
	case "system", "developer":
		return provider.RoleSystem, true
	case "user":
		return provider.RoleUser, true
	case "assistant":
		return provider.RoleAssistant, true
	case "tool", "function":
		return role, true
	}
	return "", false
}

type oaUsage struct {
	PromptTokens            int            `json:"prompt_tokens"`
	CompletionTokens        int            `json:"completion_tokens"`
	TotalTokens             int            `json:"total_tokens"`
	PromptTokensDetails     map[string]int `json:"prompt_tokens_details"`
	CompletionTokensDetails map[string]int `json:"completion_tokens_details"`
}

func newOAUsage(in, out int) *oaUsage {
	return &oaUsage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out,
		PromptTokensDetails:     map[string]int{"cached_tokens": 0, "audio_tokens": 0},
		CompletionTokensDetails: map[string]int{"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
}

const systemFingerprint = "fp_emulator"

func (e *Emulator) openAIChat(w http.ResponseWriter, r *http.Request) {
	ctx, c := e.begin(w, r, provider.OpenAI)
	defer c.finally()
	var req struct {
		Model    *string `json:"model"`
		Messages *[]struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		MaxTokens           *int     `json:"max_tokens"`
		MaxCompletionTokens *int     `json:"max_completion_tokens"`
		Temperature         *float64 `json:"temperature"`
	}
	if !c.openAIPrologue(&req, func() (string, bool) {
		if req.Model == nil {
			return "", false
		}
		return *req.Model, true
	}) {
		return
	}
	if req.Messages == nil {
		c.openAIError(400, badRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter"))
		return
	}
	if len(*req.Messages) == 0 {
		c.openAIError(400, badRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array"))
		return
	}
	var msgs []provider.Message
	for i, m := range *req.Messages {
		role, ok := oaRole(m.Role)
		if !ok {
			c.openAIError(400, badRequest(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", m.Role), fmt.Sprintf("messages[%d].role", i), "invalid_value"))
			return
		}
		text, err := oaContent(m.Content)
		if err != nil {
			c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'messages[%d].content': %v.", i, err), fmt.Sprintf("messages[%d].content", i), "invalid_type"))
			return
		}
		if role == provider.RoleSystem {
			c.rec.System = strings.TrimSpace(c.rec.System + "\n" + text)
		}
		msgs = append(msgs, provider.Message{Role: role, Content: text})
	}
	if req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 2) {
		c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got %v instead.", *req.Temperature), "temperature", "decimal_above_max_value"))
		return
	}
	maxTokens := 0
	if req.MaxTokens != nil {
		maxTokens = *req.MaxTokens
	}
	if req.MaxCompletionTokens != nil {
		maxTokens = *req.MaxCompletionTokens
	}
	if maxTokens < 0 {
		c.openAIError(400, badRequest(fmt.Sprintf("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got %d instead.", maxTokens), "max_tokens", "integer_below_min_value"))
		return
	}
	c.rec.Messages, c.rec.MaxTokens, c.rec.Temperature, c.rec.Stream = msgs, maxTokens, req.Temperature, req.Stream
	a := plan(msgs, c.k, maxTokens)
	finish := "stop"
	if a.truncated {
		finish = "length"
	}
	id, created := newID("chatcmpl-", 29), time.Now().Unix()
	model := c.rec.Model

	if !req.Stream {
		mid, ok := c.runWhole(ctx, len(a.tokens))
		if !ok {
			return
		}
		if mid {
			_, e := openAIFailure(500, model)
			c.openAIError(500, e)
			return
		}
		c.rec.TokensSent = len(a.tokens)
		w.Header().Set("Openai-Processing-Ms", fmt.Sprint(time.Since(c.start).Milliseconds()))
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": model,
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": a.text(), "refusal": nil, "annotations": []any{}},
				"logprobs":      nil,
				"finish_reason": finish,
			}},
			"usage":              newOAUsage(a.input, len(a.tokens)),
			"service_tier":       "default",
			"system_fingerprint": systemFingerprint,
		})
		c.end(http.StatusOK, OutcomeComplete)
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	chunk := func(delta any, finish *string) oaChunk {
		c := oaChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			ServiceTier: "default", SystemFingerprint: systemFingerprint,
			Choices: []oaChunkChoice{{Delta: delta, FinishReason: finish}}}
		if includeUsage {
			c.Usage = jsonNull
		}
		return c
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Openai-Processing-Ms", "0")
	s := newSSE(w, "\n")
	if s.start(http.StatusOK) != nil {
		c.interrupted()
		return
	}
	if !c.run(ctx, len(a.tokens), step{
		token: func(i int) error {
			if i == 0 {
				if err := s.event("", chunk(oaFirstDelta{Role: "assistant"}, nil)); err != nil {
					return err
				}
			}
			return s.event("", chunk(oaContentDelta{Content: delta(a.tokens, i)}, nil))
		},
		midErr: func() error {
			_, e := openAIFailure(500, model)
			return s.event("", map[string]any{"error": e})
		},
	}) {
		return
	}
	if len(a.tokens) == 0 {
		if err := s.event("", chunk(oaFirstDelta{Role: "assistant"}, nil)); err != nil {
			c.interrupted()
			return
		}
	}
	if err := s.event("", chunk(map[string]any{}, &finish)); err != nil {
		c.interrupted()
		return
	}
	if includeUsage {
		u := chunk(nil, nil)
		u.Choices = []oaChunkChoice{}
		var err error
		if u.Usage, err = json.Marshal(newOAUsage(a.input, len(a.tokens))); err != nil {
			c.interrupted()
			return
		}
		if err := s.event("", u); err != nil {
			c.interrupted()
			return
		}
	}
	if err := s.event("", "[DONE]"); err != nil {
		c.interrupted()
		return
	}
	c.end(http.StatusOK, OutcomeComplete)
}

// oaChunk is one chat.completion.chunk of a stream, its fields in the
// order the API sends them (a struct, not a map: one is written per token).
type oaChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	ServiceTier       string          `json:"service_tier"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []oaChunkChoice `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"` // null on every chunk when the request asked for usage
}

type oaChunkChoice struct {
	Index        int              `json:"index"`
	Delta        any              `json:"delta"`
	Logprobs     *json.RawMessage `json:"logprobs"` // always null
	FinishReason *string          `json:"finish_reason"`
}

// oaFirstDelta opens the answer.
type oaFirstDelta struct {
	Role    string           `json:"role"`
	Content string           `json:"content"`
	Refusal *json.RawMessage `json:"refusal"` // null
}

// oaContentDelta is the delta of a token.
type oaContentDelta struct {
	Content string `json:"content"`
}

var jsonNull = json.RawMessage("null")
