package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"polydev/internal/api"
)

// maxBody caps every request body.
const maxBody = 1 << 20

// apiError is the one error shape clients see:
// {"error":{"code":"…","message":"…"}}. Messages are written for clients and
// never carry SQL, stack traces or secrets; the cause goes to the log only.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration
	cause      error // logged, never sent
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

var (
	errUnauthorized       = errorf(http.StatusUnauthorized, "unauthorized", "missing, invalid or expired session token")
	errInvalidCredentials = errorf(http.StatusUnauthorized, "invalid_credentials", "wrong email or password")
	errConflict           = errorf(http.StatusConflict, "conflict", "an account with this email or id already exists")
)

func internalError(cause error) *apiError {
	return &apiError{status: http.StatusInternalServerError, code: "internal", message: "internal error", cause: cause}
}

// handlerFunc is an HTTP handler that returns its error instead of writing
// it, so errors are rendered and logged in one place.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		err := h(w, r)
		if err == nil {
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = internalError(err)
		}
		level := slog.LevelInfo
		if ae.status >= 500 {
			level = slog.LevelError
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", ae.status, "code", ae.code}
		if ae.cause != nil {
			attrs = append(attrs, "cause", ae.cause.Error())
		}
		s.log.Log(r.Context(), level, "request failed", attrs...)
		if ae.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((ae.retryAfter+time.Second-1)/time.Second)))
		}
		writeJSON(w, ae.status, api.ErrorBody{Error: api.ErrorDetail{Code: ae.code, Message: ae.message}})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// decode reads one JSON object into v: the body must be JSON, at most
// maxBody bytes, with no unknown fields and nothing after the object.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		}
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return errorf(http.StatusBadRequest, "invalid_json", "unexpected data after the JSON object")
	}
	return nil
}

func jsonError(err error) *apiError {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &tooBig):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", maxBody)
	case errors.As(err, &typeErr):
		return errorf(http.StatusBadRequest, "invalid_json", "field %q has the wrong type", typeErr.Field)
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "invalid_json", "the body is not a JSON object")
	default:
		// Unknown fields and other decoder complaints: their text names
		// the field, never a value.
		return errorf(http.StatusBadRequest, "invalid_json", "%s", err.Error())
	}
}
