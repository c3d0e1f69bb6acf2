// Package crypto is Polydev's zero-knowledge format: the key hierarchy, the
// KDF parameter record, the symmetric envelope, the sealed (HPKE) envelope
// and key wrapping, exactly as docs/crypto.md specifies them.
//
// In plain words: a password is stretched into a master key on the user's
// device; from it come an authentication key (the only thing the server
// sees, and it hashes it again) and a wrapping key that never leaves the
// device. The wrapping key unlocks a random account key; the account key
// unlocks the user's private key and one key per conversation. Data is
// encrypted under those keys with AES-256-GCM, and every ciphertext is bound
// to its place (table, field, row, owner) so it cannot be moved. What a
// third party must hand to the user, or the user to a machine, is sealed
// with HPKE to a public key — by default X-Wing, a post-quantum hybrid.
//
// This is the only package that handles raw key bytes. Keys are held in
// [Key] and [PrivateKey] values that print as redacted and can be wiped.
// Every failure is one of a small set of sentinel errors (see [Code]), the
// same codes the browser module and the shared test vectors use.
//
// The package does no I/O apart from reading randomness.
package crypto
