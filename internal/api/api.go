// Package api is the wire format of Polydev's public HTTP API (docs/api.md):
// the request and response bodies, written once and shared by the control
// plane that serves them and the client that sends them. It holds types
// only; no behaviour.
package api

import (
	"encoding/json"
	"time"
)

// ErrorBody is the one error shape: {"error":{"code":"…","message":"…"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a stable code and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// User is an account as the API describes it.
type User struct {
	ID     string `json:"id"`
	Email  string `json:"email"`
	Number int64  `json:"number"`
}

// KeyBundle is what the server keeps for the client: the KDF record and
// the wrapped keys, all opaque to it, and the public key.
type KeyBundle struct {
	KDF               json.RawMessage `json:"kdf"`
	WrappedAccountKey string          `json:"wrapped_account_key"`
	WrappedPrivateKey string          `json:"wrapped_private_key"`
	PublicKey         string          `json:"public_key"`
}

// EmailRequest is the body of POST /v1/auth/prelogin.
type EmailRequest struct {
	Email string `json:"email"`
}

// PreloginResponse carries the KDF record for an email (a deterministic
// stand-in for an unknown one).
type PreloginResponse struct {
	KDF json.RawMessage `json:"kdf"`
}

// RegisterRequest is the body of POST /v1/auth/register.
type RegisterRequest struct {
	UserID            string          `json:"user_id"`
	Email             string          `json:"email"`
	KDF               json.RawMessage `json:"kdf"`
	AuthKey           string          `json:"auth_key"`
	WrappedAccountKey string          `json:"wrapped_account_key"`
	WrappedPrivateKey string          `json:"wrapped_private_key"`
	PublicKey         string          `json:"public_key"`
}

// RegisterResponse is the answer to a registration.
type RegisterResponse struct {
	UserID     string `json:"user_id"`
	UserNumber int64  `json:"user_number"`
}

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	Email   string `json:"email"`
	AuthKey string `json:"auth_key"`
}

// LoginResponse is the answer to a login: a session and the key bundle.
type LoginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      User      `json:"user"`
	KeyBundle
}

// MeResponse is the answer to GET /v1/auth/me.
type MeResponse struct {
	User User `json:"user"`
	KeyBundle
}

// ChangePasswordRequest is the body of POST /v1/auth/password.
// WrappedPrivateKey may be empty when it is unchanged.
type ChangePasswordRequest struct {
	CurrentAuthKey    string          `json:"current_auth_key"`
	KDF               json.RawMessage `json:"kdf"`
	AuthKey           string          `json:"auth_key"`
	WrappedAccountKey string          `json:"wrapped_account_key"`
	WrappedPrivateKey string          `json:"wrapped_private_key,omitempty"`
}

// DeleteRequest is the body of DELETE /v1/auth/me: the auth key, asked
// again.
type DeleteRequest struct {
	AuthKey string `json:"auth_key"`
}
