package openai

import (
	"encoding/json"
	"strings"

	"polydev/internal/provider"
	"polydev/internal/provider/wire"
)

// streamError sorts an error event that arrived inside a 200 stream
// ({"error": {"message", "type", "code"}}). There is no status to go by, so
// the type and code decide.
func streamError(data []byte, key string) error {
	var body struct {
		Error struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &body) // an unreadable event is still an upstream failure
	code := strings.Trim(string(body.Error.Code), `"`)
	msg := body.Error.Message
	if msg == "" {
		msg = "error event in the stream"
	}
	return &provider.Error{
		Provider: provider.OpenAI,
		Kind:     kindForType(body.Error.Type, code),
		Message:  wire.Message(msg, key),
	}
}

// kindForType sorts an error by OpenAI's type and code strings, for the
// errors that come without a status.
func kindForType(typ, code string) provider.Kind {
	switch {
	case typ == "invalid_request_error":
		return provider.KindBadRequest
	case typ == "authentication_error" || code == "invalid_api_key":
		return provider.KindAuth
	case strings.Contains(typ, "rate_limit") || strings.Contains(code, "rate_limit"):
		return provider.KindRateLimited
	case strings.Contains(typ, "overloaded") || strings.Contains(code, "overloaded"):
		return provider.KindOverloaded
	default:
		return provider.KindUpstream
	}
}
