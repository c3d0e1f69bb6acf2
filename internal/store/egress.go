package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Egress ports, in plain words: the operator buys a range of ports on an
// upstream proxy, each port a distinct, stable exit IP. A user's linked
// providers leave through one port each; by default every provider of
// user n shares the user's own port, Base + n − 1. A port belongs to at
// most one user at a time (the egress_ports table, keyed by port), so two
// users never share an exit IP. Rotation moves one (user, provider) to a
// port nobody holds that is not the default port of any existing user,
// picking the highest such port: defaults grow from the bottom of the
// range with each registration, rotations take from the top, and the two
// meet only when the range is nearly full. A port nobody's token uses any
// more is released in the same transaction.
//
// In PostgreSQL the acting user cannot see other users' ports or numbers,
// so the choice of a free port is made by one SECURITY DEFINER function
// whose owner may read exactly those two columns (see the postgres
// package's migrations); allocations take a transaction-level advisory
// lock so that two of them never pick the same port.

// PortRange is the operator's egress ports: [Base, Base+Size).
type PortRange struct {
	Base int // the first port, 10001 by default
	Size int // how many ports
}

// Validate checks that the range is non-empty and within 1..65535.
func (r PortRange) Validate() error {
	if r.Base < 1 || r.Size < 1 || r.Base+r.Size-1 > 65535 {
		return fmt.Errorf("egress port range [%d, %d) must be non-empty and within 1..65535: %w", r.Base, r.Base+r.Size, ErrInvalid)
	}
	return nil
}

// Contains reports whether port is in the range.
func (r PortRange) Contains(port int) bool { return port >= r.Base && port < r.Base+r.Size }

// Default is the port rule: user number n egresses through Base + n − 1
// (user 1 through Base). It may lie outside the range once the range has
// fewer ports than there are users; allocation then falls back to a free
// port.
func (r PortRange) Default(userNumber int64) int {
	if userNumber < 1 || userNumber > int64(65536) {
		return 0 // no port; never Contained
	}
	return r.Base + int(userNumber) - 1
}

// ErrPortsExhausted: every port of the range is held by a user or reserved
// as an existing user's default port. It wraps ErrConflict.
var ErrPortsExhausted = fmt.Errorf("no free egress port in the range: %w", ErrConflict)

// IsPortsExhausted reports whether err is, or wraps, ErrPortsExhausted.
func IsPortsExhausted(err error) bool { return errors.Is(err, ErrPortsExhausted) }

// Egress links provider tokens to egress ports. Every method acts for the
// user `as` and sees only their rows (store.go).
type Egress interface {
	// LinkProviderToken stores the acting user's sealed credential for
	// t.Provider. On the first link of that provider it also gives it an
	// egress port: the user's default port r.Default(number) when that is
	// in r and no other user holds it, else the highest free port of r
	// (ErrPortsExhausted when there is none, and nothing is stored); the
	// new token has no egress IP and no rotation time. Linking again
	// replaces EncryptedRefreshToken, Scopes and ExpiresAt and keeps the
	// port, egress IP, times of rotation and last use, and CreatedAt.
	// t is updated with the stored row; first reports a first link.
	// An unknown provider is ErrInvalid; a t.UserID other than `as`
	// ErrNotFound.
	LinkProviderToken(ctx context.Context, as string, t *ProviderToken, r PortRange) (first bool, err error)
	// ProviderToken returns the acting user's token for provider, or
	// ErrNotFound.
	ProviderToken(ctx context.Context, as, provider string) (*ProviderToken, error)
	// RotateEgress moves the acting user's provider to the highest port
	// of r that nobody holds and that is no existing user's default port,
	// records now as LastRotatedAt, clears EgressIP (the new port's IP is
	// not known yet), and releases the old port if no other provider of
	// the user uses it. It returns the old port and the updated token.
	// ErrNotFound when the provider is not linked; ErrPortsExhausted
	// when no port is free (nothing changes).
	RotateEgress(ctx context.Context, as, provider string, r PortRange, now time.Time) (oldPort int, t *ProviderToken, err error)
	// SetEgressIP records ip as the egress IP of the acting user's
	// provider, if it still egresses through port: ErrConflict when a
	// rotation moved it meanwhile, ErrNotFound when it is not linked.
	SetEgressIP(ctx context.Context, as, provider string, port int, ip string) error
	// TouchProviderToken records now as the token's last use; a later
	// use already recorded is kept. ErrNotFound when not linked.
	TouchProviderToken(ctx context.Context, as, provider string, now time.Time) error
}
