package api

import "time"

// LoginVMSession is a login VM session as the API describes it: the
// answer to POST /v1/accounts/{provider}/link/start, GET and DELETE
// /v1/accounts/link/sessions/{login_vm_session_id}. Times are absent until the
// session reaches them.
type LoginVMSession struct {
	LoginVMSessionID string `json:"login_vm_session_id"`
	Provider         string `json:"provider"`
	// Status is booting, ready, authenticating, completed, failed or
	// destroyed.
	Status           string     `json:"status"`
	CreatedAt        time.Time  `json:"created_at"`
	ReadyAt          *time.Time `json:"ready_at,omitempty"`
	AuthenticatingAt *time.Time `json:"authenticating_at,omitempty"`
	EndedAt          *time.Time `json:"ended_at,omitempty"`
	DestroyedAt      *time.Time `json:"destroyed_at,omitempty"`
	// ExpiresAt is when the VM is destroyed at the latest.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Removed lists what destroying the VM removed from the host
	// (process, socket, overlay, config, tap, state_dir, cgroup); only in
	// the answer to the DELETE that destroyed it.
	Removed []string `json:"removed,omitempty"`
}

// LoginVMSessions is the answer to GET /v1/accounts/link: the signed-in
// user's live login VM sessions, newest first.
type LoginVMSessions struct {
	Sessions []LoginVMSession `json:"sessions"`
}
