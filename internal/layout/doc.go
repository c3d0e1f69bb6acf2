// Package layout holds the tests that keep the repository's structure
// honest: every package documents itself, and only internal/crypto touches
// raw key material through the cryptographic primitives.
package layout
