package api

import "time"

// Linked provider accounts and their egress (docs/api.md, "Accounts").

// LinkTokenRequest is the body of POST /v1/accounts/tokens: a provider
// credential sealed on the device to the user's own public key, in the
// context crypto.ProviderTokenContext(user id, provider).
type LinkTokenRequest struct {
	Provider       string `json:"provider"`
	EncryptedToken string `json:"encrypted_token"`
}

// LinkedAccount is one linked provider as the API describes it. The proxy
// behind the port is never described.
type LinkedAccount struct {
	Provider      string     `json:"provider"`
	Scopes        []string   `json:"scopes"`
	EgressPort    int        `json:"egress_port"`
	EgressIP      string     `json:"egress_ip"` // "" while unknown
	LastUsed      *time.Time `json:"last_used"`
	LastRotatedAt *time.Time `json:"last_rotated_at"`
	LinkedAt      time.Time  `json:"linked_at"`
}

// LinkTokenResponse answers a link: the account as stored. EgressIPError
// says why the egress IP could not be looked up; the token is linked all
// the same.
type LinkTokenResponse struct {
	LinkedAccount
	// Replaced is set when the provider was linked already and its
	// credential was replaced (HTTP 200; a first link is 201).
	Replaced      bool   `json:"replaced,omitempty"`
	EgressIPError string `json:"egress_ip_error,omitempty"`
}

// AccountsResponse is the answer to GET /v1/accounts.
type AccountsResponse struct {
	Providers []LinkedAccount `json:"providers"`
}

// RotateEgressResponse is the answer to POST
// /v1/accounts/{provider}/rotate-egress.
type RotateEgressResponse struct {
	NewPort       int       `json:"new_port"`
	OldPort       int       `json:"old_port"`
	EgressIP      string    `json:"egress_ip"`
	RotatedAt     time.Time `json:"rotated_at"`
	EgressIPError string    `json:"egress_ip_error,omitempty"`
}
