package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"polydev/internal/provider"
)

// Google Gemini: https://ai.google.dev/api/generate-content. Errors are
// {"error":{"code","message","status","details"}}. A missing key is 403
// PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT with an ErrorInfo
// detail of reason API_KEY_INVALID, as the real API answers; a 429 carries
// its delay in a google.rpc.RetryInfo detail, not in a header. Streams are
// Server-Sent Events ending lines with "\r\n" under ?alt=sse, and otherwise
// one JSON array whose elements arrive as they are made; in that form an
// error body is an array as well: [{"error":{…}}].

type gError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

func (c *call) googleError(e gError) {
	if d, ok := c.retryAfter(e.Code); ok && c.injected {
		e.Details = append(e.Details, map[string]any{
			"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": fmt.Sprintf("%gs", d.Seconds()),
		})
	}
	var body any = map[string]any{"error": e}
	if c.googleArray {
		// The JSON-array stream form wraps its errors in an array too.
		body = []any{body}
	}
	b, _ := json.MarshalIndent(body, "", "  ")
	c.w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	c.w.WriteHeader(e.Code)
	_, _ = c.w.Write(append(b, '\n'))
	c.end(e.Code, OutcomeError)
}

func googleBad(msg string) gError { return gError{Code: 400, Message: msg, Status: "INVALID_ARGUMENT"} }

// googleFailure is Gemini's error for an injected status.
func googleFailure(status int, model, version string) gError {
	switch status {
	case 400:
		return googleBad("Invalid request (emulator: fail=400).")
	case 401:
		return gError{Code: 401, Message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.", Status: "UNAUTHENTICATED"}
	case 403:
		return gError{Code: 403, Message: "The caller does not have permission", Status: "PERMISSION_DENIED"}
	case 404:
		return gError{Code: 404, Message: fmt.Sprintf("models/%s is not found for API version %s, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.", model, version), Status: "NOT_FOUND"}
	case 429:
		return gError{Code: 429, Message: "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.", Status: "RESOURCE_EXHAUSTED"}
	case 500:
		return gError{Code: 500, Message: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", Status: "INTERNAL"}
	case 503, 529:
		return gError{Code: 503, Message: "The model is overloaded. Please try again later.", Status: "UNAVAILABLE"}
	case 504:
		return gError{Code: 504, Message: "Deadline expired before operation could complete.", Status: "DEADLINE_EXCEEDED"}
	}
	st := "FAILED_PRECONDITION"
	if status >= 500 {
		st = "UNKNOWN"
	}
	return gError{Code: status, Message: http.StatusText(status) + " (emulator: fail).", Status: st}
}

type gContent struct {
	Role  string `json:"role,omitempty"`
	Parts []struct {
		Text *string `json:"text"`
	} `json:"parts"`
}

func (g *gContent) text() string {
	if g == nil {
		return ""
	}
	var texts []string
	for _, p := range g.Parts {
		if p.Text != nil {
			texts = append(texts, *p.Text)
		}
	}
	return strings.Join(texts, "")
}

type gConfig struct {
	Temperature      *float64 `json:"temperature"`
	MaxOutputTokens  *int     `json:"maxOutputTokens"`
	MaxOutputTokens2 *int     `json:"max_output_tokens"`
}

func (e *Emulator) google(w http.ResponseWriter, r *http.Request) {
	ctx, c := e.begin(w, r, provider.Google)
	defer c.finally()
	version := r.PathValue("version")
	model, method, ok := strings.Cut(r.PathValue("call"), ":")
	if !ok || (method != "generateContent" && method != "streamGenerateContent") || (version != "v1beta" && version != "v1") {
		c.googleError(gError{Code: 404, Message: "The requested URL was not found on this server.", Status: "NOT_FOUND"})
		return
	}
	c.googleArray = method == "streamGenerateContent" && r.URL.Query().Get("alt") != "sse"
	key := r.Header.Get("X-Goog-Api-Key")
	if key == "" {
		key = r.URL.Query().Get("key")
	}
	if key == "" {
		c.googleError(gError{Code: 403, Message: "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", Status: "PERMISSION_DENIED"})
		return
	}
	if !e.keyOK(key) {
		c.googleError(gError{Code: 400, Message: "API key not valid. Please pass a valid API key.", Status: "INVALID_ARGUMENT", Details: []map[string]any{{
			"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
			"metadata": map[string]string{"service": "generativelanguage.googleapis.com"},
		}}})
		return
	}
	var req struct {
		Contents           []gContent `json:"contents"`
		SystemInstruction  *gContent  `json:"systemInstruction"`
		SystemInstruction2 *gContent  `json:"system_instruction"`
		GenerationConfig   *gConfig   `json:"generationConfig"`
		GenerationConfig2  *gConfig   `json:"generation_config"`
	}
	if err := decode(r, &req); err != nil {
		c.googleError(googleBad(fmt.Sprintf("Invalid JSON payload received. %v", err)))
		return
	}
	name, suffix := splitModel(model)
	c.rec.Model = name
	c.rec.Stream = method == "streamGenerateContent"
	if err := c.knobs(suffix); err != nil {
		c.googleError(googleBad("emulator: " + err.Error()))
		return
	}
	if len(req.Contents) == 0 {
		c.googleError(googleBad("* GenerateContentRequest.contents: contents is not specified\n"))
		return
	}
	var msgs []provider.Message
	sys := req.SystemInstruction
	if sys == nil {
		sys = req.SystemInstruction2
	}
	if t := sys.text(); t != "" {
		c.rec.System = t
		msgs = append(msgs, provider.Message{Role: provider.RoleSystem, Content: t})
	}
	for _, m := range req.Contents {
		role := provider.RoleUser
		switch m.Role {
		case "", "user":
		case "model":
			role = provider.RoleAssistant
		default:
			c.googleError(googleBad("Please use a valid role: user, model."))
			return
		}
		msgs = append(msgs, provider.Message{Role: role, Content: m.text()})
	}
	cfg := req.GenerationConfig
	if cfg == nil {
		cfg = req.GenerationConfig2
	}
	maxTokens := 0
	var temp *float64
	if cfg != nil {
		temp = cfg.Temperature
		if cfg.MaxOutputTokens != nil {
			maxTokens = *cfg.MaxOutputTokens
		} else if cfg.MaxOutputTokens2 != nil {
			maxTokens = *cfg.MaxOutputTokens2
		}
	}
	if temp != nil && (*temp < 0 || *temp > 2) {
		c.googleError(googleBad(fmt.Sprintf("* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0], got %v\n", *temp)))
		return
	}
	if c.shouldFail() {
		c.googleError(googleFailure(c.k.fail, name, version))
		return
	}
	c.rec.Messages, c.rec.MaxTokens, c.rec.Temperature = msgs[len(msgs)-len(req.Contents):], maxTokens, temp
	a := plan(msgs, c.k, maxTokens)
	finish := "STOP"
	if a.truncated {
		finish = "MAX_TOKENS"
	}
	respID := newID("", 22)
	promptDetails := []any{map[string]any{"modality": "TEXT", "tokenCount": a.input}}
	chunk := func(text string, final bool) map[string]any {
		cand := map[string]any{"content": map[string]any{"parts": []any{map[string]any{"text": text}}, "role": "model"}, "index": 0}
		usage := map[string]any{"promptTokenCount": a.input, "totalTokenCount": a.input, "promptTokensDetails": promptDetails}
		if final {
			cand["finishReason"] = finish
			usage["candidatesTokenCount"] = len(a.tokens)
			usage["totalTokenCount"] = a.input + len(a.tokens)
		}
		return map[string]any{"candidates": []any{cand}, "usageMetadata": usage, "modelVersion": name, "responseId": respID}
	}

	if method == "generateContent" {
		mid, ok := c.runWhole(ctx, len(a.tokens))
		if !ok {
			return
		}
		if mid {
			c.googleError(googleFailure(503, name, version))
			return
		}
		c.rec.TokensSent = len(a.tokens)
		b, _ := json.MarshalIndent(chunk(a.text(), true), "", "  ")
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		_, _ = w.Write(append(b, '\n'))
		c.end(http.StatusOK, OutcomeComplete)
		return
	}

	midErr := map[string]any{"error": googleFailure(503, name, version)}
	if r.URL.Query().Get("alt") == "sse" {
		w.Header().Set("Content-Type", "text/event-stream")
		s := newSSE(w, "\r\n")
		if s.start(http.StatusOK) != nil {
			c.interrupted()
			return
		}
		if !c.run(ctx, len(a.tokens), step{
			token:  func(i int) error { return s.event("", chunk(delta(a.tokens, i), false)) },
			midErr: func() error { return s.event("", midErr) },
		}) {
			return
		}
		if s.event("", chunk("", true)) != nil {
			c.interrupted()
			return
		}
		c.end(http.StatusOK, OutcomeComplete)
		return
	}

	// Without alt=sse the stream is a JSON array written element by element.
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	rc := http.NewResponseController(w)
	first := true
	element := func(v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		sep := "[" // the first element opens the array
		if !first {
			sep = "\n,\r\n"
		}
		first = false
		if _, err := w.Write(append([]byte(sep), b...)); err != nil {
			return err
		}
		return rc.Flush()
	}
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		c.interrupted()
		return
	}
	if !c.run(ctx, len(a.tokens), step{
		token: func(i int) error { return element(chunk(delta(a.tokens, i), false)) },
		midErr: func() error {
			if err := element(midErr); err != nil {
				return err
			}
			_, err := w.Write([]byte("\n]"))
			return err
		},
	}) {
		return
	}
	if element(chunk("", true)) != nil {
		c.interrupted()
		return
	}
	if _, err := w.Write([]byte("\n]")); err != nil {
		c.interrupted()
		return
	}
	c.end(http.StatusOK, OutcomeComplete)
}
