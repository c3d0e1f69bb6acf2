package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"

	"polydev/internal/crypto"
)

// The account flows. Each does its key handling through internal/crypto
// and wipes what it derived before returning. Passwords are the caller's
// buffers: the flows read them and never keep them, and the caller wipes
// them. The base64 auth key sent to the server is a Go string and cannot be
// wiped; it is dropped as soon as the request is sent.

// Errors of the flows that a caller turns into advice.
var (
	// ErrWrongCredentials: the server refused the email and password at
	// login (it does not say which is wrong).
	ErrWrongCredentials = errors.New("wrong email or password")
	// ErrWrongPassword: the password given to confirm a change or a
	// deletion does not match the account.
	ErrWrongPassword = errors.New("wrong password")
	// ErrKeysDamaged: the server accepted the credentials but the keys it
	// returned do not open with them, or do not match each other: they were
	// tampered with or damaged. The client refuses to use them.
	ErrKeysDamaged = errors.New("the keys the server returned are damaged or were tampered with")
)

// Keys are a user's unwrapped keys. The holder must Wipe them.
type Keys struct {
	Account crypto.Key
	Private *crypto.PrivateKey
	Public  *crypto.PublicKey
}

// Wipe zeroes the account key and drops the private key. Safe twice.
func (k *Keys) Wipe() {
	if k == nil {
		return
	}
	k.Account.Wipe()
	if k.Private != nil {
		k.Private.Wipe()
	}
}

// NormalizeEmail trims and lowercases an email address (the server stores
// it lowercase) and checks that it is a bare address with a dot in its
// domain, as the server does.
func NormalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	if len(e) < 3 || len(e) > 254 {
		return "", fmt.Errorf("email %q: want 3 to 254 characters", email)
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || !strings.Contains(e[strings.LastIndexByte(e, '@')+1:], ".") {
		return "", fmt.Errorf("email %q: not a valid address", email)
	}
	return e, nil
}

// Registration is the outcome of Register.
type Registration struct {
	UserID     string
	UserNumber int64
}

// Register creates an account on the server: a new user id, the default
// KDF record with a fresh salt, a random account key wrapped by the
// password's wrap key, and an X-Wing key pair whose private key is wrapped by
// the account key. It does not log in; call Login for a session.
func Register(ctx context.Context, c *Client, email string, password []byte) (Registration, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return Registration{}, err
	}
	id, err := uuid.NewRandom() // version 4, from crypto/rand
	if err != nil {
		return Registration{}, fmt.Errorf("new user id: %w", err)
	}
	userID := id.String()
	params := crypto.DefaultKDFParams()
	kdf, err := params.MarshalJSON()
	if err != nil {
		return Registration{}, err
	}
	auth, wrap, err := deriveSubkeys(password, params)
	if err != nil {
		return Registration{}, err
	}
	defer auth.Wipe()
	defer wrap.Wipe()

	accountKey := crypto.NewKey()
	defer accountKey.Wipe()
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		return Registration{}, err
	}
	defer priv.Wipe()
	wrappedAccount, err := crypto.WrapKey(wrap, crypto.AccountKeyContext(userID), accountKey)
	if err != nil {
		return Registration{}, fmt.Errorf("wrap account key: %w", err)
	}
	wrappedPrivate, err := crypto.WrapPrivateKey(accountKey, crypto.PrivateKeyContext(userID), priv)
	if err != nil {
		return Registration{}, fmt.Errorf("wrap private key: %w", err)
	}
	authText, err := auth.Text()
	if err != nil {
		return Registration{}, err
	}
	resp, err := c.Register(ctx, RegisterRequest{
		UserID: userID, Email: email, KDF: kdf, AuthKey: authText,
		WrappedAccountKey: wrappedAccount, WrappedPrivateKey: wrappedPrivate,
		PublicKey: priv.Public().String(),
	})
	if err != nil {
		return Registration{}, err
	}
	// The wrapped keys are bound to the id this client chose.
	if resp.UserID != userID {
		return Registration{}, fmt.Errorf("register: the server recorded user id %q, this client chose %q", resp.UserID, userID)
	}
	return Registration{UserID: userID, UserNumber: resp.UserNumber}, nil
}

// Login asks the server for the account's KDF record, refuses it if it is
// weaker than this client accepts, derives the auth key, logs in, and
// unwraps the returned keys locally — proof that the password is right and
// the keys are intact. It returns the session to save (ciphertext only) and
// the unwrapped keys, which the caller must Wipe.
//
// A refused password is ErrWrongCredentials; keys that do not open, or a
// public key that is not the private key's, are ErrKeysDamaged (the session
// the server opened is then revoked again, best effort).
func Login(ctx context.Context, c *Client, email string, password []byte) (*Session, *Keys, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return nil, nil, err
	}
	raw, err := c.Prelogin(ctx, email)
	if err != nil {
		return nil, nil, err
	}
	params, err := checkServerKDF(raw, "log in")
	if err != nil {
		return nil, nil, err
	}
	auth, wrap, err := deriveSubkeys(password, params)
	if err != nil {
		return nil, nil, err
	}
	defer auth.Wipe()
	defer wrap.Wipe()
	authText, err := auth.Text()
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.Login(ctx, email, authText)
	if HasCode(err, CodeInvalidCredentials) {
		return nil, nil, fmt.Errorf("%w (%w)", ErrWrongCredentials, err)
	}
	if err != nil {
		return nil, nil, err
	}
	sess, keys, err := openLogin(resp, email, params, wrap)
	if err != nil {
		revokeQuietly(ctx, c, resp.Token)
		return nil, nil, err
	}
	sess.Server = c.ServerURL()
	return sess, keys, nil
}

// openLogin checks a login answer against what the client derived and
// unwraps its keys.
func openLogin(resp *LoginResponse, email string, params crypto.KDFParams, wrap crypto.Key) (*Session, *Keys, error) {
	if _, err := uuid.Parse(resp.User.ID); err != nil {
		return nil, nil, fmt.Errorf("login: the server's answer has an invalid user id %q", resp.User.ID)
	}
	if !strings.EqualFold(resp.User.Email, email) {
		return nil, nil, fmt.Errorf("login: the server answered for %q, not %q", resp.User.Email, email)
	}
	// The record the keys are wrapped under must be the one prelogin gave.
	got, err := crypto.ParseKDFParams(resp.KDF)
	if err != nil {
		return nil, nil, fmt.Errorf("login: the server's kdf record: %w", err)
	}
	want, _ := params.MarshalJSON()
	canon, _ := got.MarshalJSON()
	if string(canon) != string(want) {
		return nil, nil, errors.New("login: the server's kdf record differs from the one it gave at prelogin")
	}
	keys, err := unwrapBundle(resp.User.ID, wrap, resp.KeyBundle)
	if err != nil {
		return nil, nil, err
	}
	return &Session{
		Email: resp.User.Email, UserID: resp.User.ID, UserNumber: resp.User.Number,
		Token: resp.Token, ExpiresAt: resp.ExpiresAt,
		KeyBundle: KeyBundle{KDF: canon, WrappedAccountKey: resp.WrappedAccountKey,
			WrappedPrivateKey: resp.WrappedPrivateKey, PublicKey: resp.PublicKey},
	}, keys, nil
}

// unwrapBundle opens the account key with wrap and then the rest of the
// bundle (openPrivate). Every failure is ErrKeysDamaged.
func unwrapBundle(userID string, wrap crypto.Key, b KeyBundle) (*Keys, error) {
	account, err := crypto.UnwrapKey(wrap, crypto.AccountKeyContext(userID), b.WrappedAccountKey)
	if err != nil {
		return nil, fmt.Errorf("%w: account key: %w", ErrKeysDamaged, err)
	}
	return openPrivate(userID, account, b)
}

// openPrivate opens the private key with the account key and checks that
// the public key is the private key's: a server that swapped in a public
// key of its own would receive what others seal to this user. It takes
// ownership of account (wiped on failure). Every failure is ErrKeysDamaged.
func openPrivate(userID string, account crypto.Key, b KeyBundle) (*Keys, error) {
	priv, err := crypto.UnwrapPrivateKey(account, crypto.PrivateKeyContext(userID), b.WrappedPrivateKey)
	if err != nil {
		account.Wipe()
		return nil, fmt.Errorf("%w: private key: %w", ErrKeysDamaged, err)
	}
	keys := &Keys{Account: account, Private: priv, Public: priv.Public()}
	if pub, err := crypto.ParsePublicKey(b.PublicKey); err != nil || pub.String() != keys.Public.String() {
		keys.Wipe()
		return nil, fmt.Errorf("%w: the public key is not the private key's", ErrKeysDamaged)
	}
	return keys, nil
}

// unlockWith opens a bundle that opened with the right password before (at
// login): an account key that fails to authenticate now means the password
// is wrong (ErrWrongPassword); anything else is ErrKeysDamaged.
func unlockWith(userID string, wrap crypto.Key, b KeyBundle) (*Keys, error) {
	account, err := crypto.UnwrapKey(wrap, crypto.AccountKeyContext(userID), b.WrappedAccountKey)
	if errors.Is(err, crypto.ErrOpenFailed) {
		return nil, ErrWrongPassword
	}
	if err != nil {
		return nil, fmt.Errorf("%w: account key: %w", ErrKeysDamaged, err)
	}
	return openPrivate(userID, account, b)
}

// Unlock opens a saved session's keys with the password, without the
// server. A password that does not open them is ErrWrongPassword. The
// caller must Wipe the keys.
func Unlock(sess *Session, password []byte) (*Keys, error) {
	params, err := crypto.ParseKDFParams(sess.KDF)
	if err != nil {
		return nil, fmt.Errorf("saved kdf record: %w", err)
	}
	auth, wrap, err := deriveSubkeys(password, params)
	if err != nil {
		return nil, err
	}
	auth.Wipe()
	defer wrap.Wipe()
	return unlockWith(sess.UserID, wrap, sess.KeyBundle)
}

// ChangePassword re-wraps the same account key under a key derived from
// newPassword with a fresh salt, and sends the new auth key and record,
// proven by the current one. The server signs out every other session.
// On success sess holds the new record and wrapped keys; the caller saves
// it. No data is re-encrypted.
func ChangePassword(ctx context.Context, c *Client, sess *Session, oldPassword, newPassword []byte) error {
	me, err := activeAccount(ctx, c, sess)
	if err != nil {
		return err
	}
	params, err := checkServerKDF(me.KDF, "change the password")
	if err != nil {
		return err
	}
	oldAuth, oldWrap, err := deriveSubkeys(oldPassword, params)
	if err != nil {
		return err
	}
	defer oldAuth.Wipe()
	defer oldWrap.Wipe()
	// Checked locally first: the account key must be re-wrapped anyway.
	keys, err := unlockWith(sess.UserID, oldWrap, me.KeyBundle)
	if err != nil {
		return err
	}
	defer keys.Wipe()

	newParams := crypto.DefaultKDFParams()
	kdf, err := newParams.MarshalJSON()
	if err != nil {
		return err
	}
	newAuth, newWrap, err := deriveSubkeys(newPassword, newParams)
	if err != nil {
		return err
	}
	defer newAuth.Wipe()
	defer newWrap.Wipe()
	wrappedAccount, err := crypto.WrapKey(newWrap, crypto.AccountKeyContext(sess.UserID), keys.Account)
	if err != nil {
		return fmt.Errorf("wrap account key: %w", err)
	}
	wrappedPrivate, err := crypto.WrapPrivateKey(keys.Account, crypto.PrivateKeyContext(sess.UserID), keys.Private)
	if err != nil {
		return fmt.Errorf("wrap private key: %w", err)
	}
	current, err := oldAuth.Text()
	if err != nil {
		return err
	}
	next, err := newAuth.Text()
	if err != nil {
		return err
	}
	err = c.ChangePassword(ctx, sess.Token, ChangePasswordRequest{
		CurrentAuthKey: current, KDF: kdf, AuthKey: next,
		WrappedAccountKey: wrappedAccount, WrappedPrivateKey: wrappedPrivate,
	})
	if err != nil {
		return sessionError(err)
	}
	sess.KDF, sess.WrappedAccountKey, sess.WrappedPrivateKey = kdf, wrappedAccount, wrappedPrivate
	sess.PublicKey = me.PublicKey
	return nil
}

// DeleteAccount deletes the session's account on the server, proven by the
// password again. The caller then removes the saved session.
func DeleteAccount(ctx context.Context, c *Client, sess *Session, password []byte) error {
	me, err := activeAccount(ctx, c, sess)
	if err != nil {
		return err
	}
	params, err := checkServerKDF(me.KDF, "delete the account")
	if err != nil {
		return err
	}
	auth, wrap, err := deriveSubkeys(password, params)
	if err != nil {
		return err
	}
	wrap.Wipe()
	defer auth.Wipe()
	authText, err := auth.Text()
	if err != nil {
		return err
	}
	return sessionError(c.DeleteAccount(ctx, sess.Token, authText))
}

// Me returns the session's account as the server sees it now.
func Me(ctx context.Context, c *Client, sess *Session) (*MeResponse, error) {
	return activeAccount(ctx, c, sess)
}

// activeAccount checks the session locally, then asks the server for the
// account, so an expired or revoked session is reported before any slow
// key derivation.
func activeAccount(ctx context.Context, c *Client, sess *Session) (*MeResponse, error) {
	if err := sess.Active(time.Now()); err != nil {
		return nil, err
	}
	me, err := c.Me(ctx, sess.Token)
	if err != nil {
		return nil, sessionError(err)
	}
	if me.User.ID != sess.UserID {
		return nil, fmt.Errorf("the server answered for user %q, the session is for %q", me.User.ID, sess.UserID)
	}
	return me, nil
}

// sessionError maps the API's session and credential refusals to the
// flows' errors, keeping the API error wrapped.
func sessionError(err error) error {
	switch {
	case HasCode(err, CodeUnauthorized):
		return fmt.Errorf("%w (%w)", ErrSessionExpired, err)
	case HasCode(err, CodeInvalidCredentials):
		return fmt.Errorf("%w (%w)", ErrWrongPassword, err)
	}
	return err
}

// checkServerKDF parses a KDF record a server offered. Below the client's
// minimums it refuses before anything is derived or sent: a weak record
// would make the auth key cheap to brute-force (docs/crypto.md §3.3).
// doing names the refused action in the message ("log in").
func checkServerKDF(raw json.RawMessage, doing string) (crypto.KDFParams, error) {
	p, err := crypto.ParseKDFParams(raw)
	switch {
	case errors.Is(err, crypto.ErrWeakKDFParams):
		return p, fmt.Errorf("the server offered weaker key-derivation parameters than this client accepts; refusing to %s: %w", doing, err)
	case err != nil:
		return p, fmt.Errorf("the server's key-derivation parameters are not acceptable: %w", err)
	}
	return p, nil
}

// deriveSubkeys stretches the password and returns the auth and wrap keys;
// the master key is wiped before returning. The caller wipes both.
func deriveSubkeys(password []byte, params crypto.KDFParams) (crypto.AuthKey, crypto.Key, error) {
	master, err := crypto.DeriveMasterKey(password, params)
	if err != nil {
		if errors.Is(err, crypto.ErrMalformed) {
			return crypto.AuthKey{}, crypto.Key{}, fmt.Errorf("password not usable: %w", err)
		}
		return crypto.AuthKey{}, crypto.Key{}, err
	}
	defer master.Wipe()
	return crypto.DeriveSubkeys(master)
}

// revokeQuietly revokes a session the client will not use, best effort.
func revokeQuietly(ctx context.Context, c *Client, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = c.Logout(ctx, token)
}
