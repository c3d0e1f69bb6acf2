package crypto_test

// The shared vector schema and its checker. The same schema is read by the
// browser module's checker (web/crypto/vectors.js), and the interop tests
// exchange freshly made cases in it.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"polydev/internal/crypto"
)

type vectorFile struct {
	Format    string          `json:"format"`
	Version   int             `json:"version"`
	Generator string          `json:"generator"`
	KDF       []kdfCase       `json:"kdf"`
	Symmetric []symCase       `json:"symmetric"`
	Sealed    []sealedCase    `json:"sealed"`
	Wrap      []wrapCase      `json:"wrap"`
	PublicKey []publicKeyCase `json:"public_keys"`
	Hierarchy []hierarchyCase `json:"hierarchy"`
}

type vctx struct {
	Table string `json:"table"`
	Field string `json:"field"`
	Row   string `json:"row"`
	Owner string `json:"owner"`
}

func (c vctx) ctx() crypto.Context {
	return crypto.Context{Table: c.Table, Field: c.Field, Row: c.Row, Owner: c.Owner}
}

func toV(c crypto.Context) vctx { return vctx{c.Table, c.Field, c.Row, c.Owner} }

// kdfCase: a KDF record and, when it is valid, its canonical form and
// (optionally) a derivation.
type kdfCase struct {
	Name      string  `json:"name"`
	Record    string  `json:"record"`
	Canonical string  `json:"canonical,omitempty"`
	Password  *string `json:"password,omitempty"` // present: derive from it

	MasterKey string `json:"master_key,omitempty"` // hex
	AuthKey   string `json:"auth_key,omitempty"`   // hex
	WrapKey   string `json:"wrap_key,omitempty"`   // hex
	Error     string `json:"error,omitempty"`
}

type symCase struct {
	Name      string `json:"name"`
	Key       string `json:"key"` // hex
	Context   vctx   `json:"context"`
	Plaintext string `json:"plaintext,omitempty"` // hex
	Envelope  string `json:"envelope"`
	Error     string `json:"error,omitempty"`
}

type sealedCase struct {
	Name       string `json:"name"`
	Suite      string `json:"suite"`
	PrivateKey string `json:"private_key_record"` // hex
	PublicKey  string `json:"public_key"`
	Context    vctx   `json:"context"`
	Plaintext  string `json:"plaintext,omitempty"` // hex
	Envelope   string `json:"envelope"`
	Error      string `json:"error,omitempty"`
}

type wrapCase struct {
	Name        string `json:"name"`
	Type        string `json:"type"`         // "key" or "private_key"
	WrappingKey string `json:"wrapping_key"` // hex
	Context     vctx   `json:"context"`
	Unwrapped   string `json:"unwrapped,omitempty"` // hex: the key, or the private key record
	PublicKey   string `json:"public_key,omitempty"`
	Wrapped     string `json:"wrapped"`
	Error       string `json:"error,omitempty"`
}

type publicKeyCase struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Suite     string `json:"suite,omitempty"`
	Key       string `json:"key,omitempty"` // hex: the serialized KEM public key inside the record
	Error     string `json:"error,omitempty"`
}

// hierarchyCase walks the whole key hierarchy of docs/crypto.md §7 from a
// password to a message and a sealed provider token.
type hierarchyCase struct {
	Name                   string `json:"name"`
	Password               string `json:"password"`
	KDFRecord              string `json:"kdf_record"`
	UserID                 string `json:"user_id"`
	AuthKey                string `json:"auth_key"` // base64, as sent to the server
	WrappedAccountKey      string `json:"wrapped_account_key"`
	AccountKey             string `json:"account_key"` // hex
	WrappedPrivateKey      string `json:"wrapped_private_key"`
	PublicKey              string `json:"public_key"`
	ConversationID         string `json:"conversation_id"`
	WrappedConversationKey string `json:"wrapped_conversation_key"`
	ConversationKey        string `json:"conversation_key"` // hex
	MessageID              string `json:"message_id"`
	EncryptedMessage       string `json:"encrypted_message"`
	Message                string `json:"message"`
	Provider               string `json:"provider"`
	SealedToken            string `json:"sealed_token"`
	Token                  string `json:"token"`
}

// expect compares an outcome with a case's declared result: err must carry
// the declared code, or, for a valid case, be nil.
func expect(want string, err error) error {
	got := crypto.Code(err)
	if got != want {
		if want == "" {
			return fmt.Errorf("got error %q (%v); want success", got, err)
		}
		return fmt.Errorf("got error code %q (%v); want %q", got, err, want)
	}
	return nil
}

func mustHexKey(s string) (crypto.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return crypto.Key{}, err
	}
	return crypto.KeyFromBytes(b)
}

func hexEq(what, wantHex string, got []byte) error {
	want, err := hex.DecodeString(wantHex)
	if err != nil {
		return fmt.Errorf("%s: bad hex in vector: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: got %x; want %s", what, got, wantHex)
	}
	return nil
}

func checkKDF(c kdfCase) error {
	p, err := crypto.ParseKDFParams([]byte(c.Record))
	if err != nil || (c.Password == nil && c.Error != "") {
		return expect(c.Error, err)
	}
	if c.Canonical != "" {
		got, _ := json.Marshal(p)
		if string(got) != c.Canonical {
			return fmt.Errorf("canonical form: got %s; want %s", got, c.Canonical)
		}
	}
	if c.Password == nil {
		return nil
	}
	mk, err := crypto.DeriveMasterKey([]byte(*c.Password), p)
	if err != nil || c.Error != "" {
		return expect(c.Error, err)
	}
	defer mk.Wipe()
	if err := hexEq("master key", c.MasterKey, mk.RawForTest()); err != nil {
		return err
	}
	auth, wrap, err := crypto.DeriveSubkeys(mk)
	if err != nil {
		return err
	}
	if err := hexEq("auth key", c.AuthKey, auth.RawForTest()); err != nil {
		return err
	}
	return hexEq("wrap key", c.WrapKey, wrap.RawForTest())
}

func checkSym(c symCase) error {
	key, err := mustHexKey(c.Key)
	if err != nil {
		return fmt.Errorf("vector key: %v", err)
	}
	pt, err := crypto.Open(key, c.Context.ctx(), c.Envelope)
	if e := expect(c.Error, err); e != nil || err != nil {
		return e
	}
	return hexEq("plaintext", c.Plaintext, pt)
}

func privateFromHex(s string) (*crypto.PrivateKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	return crypto.ParsePrivateKeyRecordForTest(b)
}

func checkSealed(c sealedCase) error {
	priv, err := privateFromHex(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("vector private key: %v", err)
	}
	if priv.Suite().Name != c.Suite {
		return fmt.Errorf("private key suite %s; vector says %s", priv.Suite().Name, c.Suite)
	}
	if c.PublicKey != priv.Public().String() {
		return errors.New("public key does not match the private key")
	}
	pt, err := crypto.OpenSealed(priv, c.Context.ctx(), c.Envelope)
	if e := expect(c.Error, err); e != nil || err != nil {
		return e
	}
	return hexEq("plaintext", c.Plaintext, pt)
}

func checkWrap(c wrapCase) error {
	wk, err := mustHexKey(c.WrappingKey)
	if err != nil {
		return fmt.Errorf("vector wrapping key: %v", err)
	}
	switch c.Type {
	case "key":
		k, err := crypto.UnwrapKey(wk, c.Context.ctx(), c.Wrapped)
		if e := expect(c.Error, err); e != nil || err != nil {
			return e
		}
		return hexEq("unwrapped key", c.Unwrapped, k.RawForTest())
	case "private_key":
		k, err := crypto.UnwrapPrivateKey(wk, c.Context.ctx(), c.Wrapped)
		if e := expect(c.Error, err); e != nil || err != nil {
			return e
		}
		rec, err := k.RecordForTest()
		if err != nil {
			return err
		}
		if err := hexEq("unwrapped private key record", c.Unwrapped, rec); err != nil {
			return err
		}
		if got := k.Public().String(); got != c.PublicKey {
			return fmt.Errorf("public key of unwrapped key: got %s; want %s", got, c.PublicKey)
		}
		return nil
	}
	return fmt.Errorf("unknown wrap type %q", c.Type)
}

func checkPublicKey(c publicKeyCase) error {
	pk, err := crypto.ParsePublicKey(c.PublicKey)
	if e := expect(c.Error, err); e != nil || err != nil {
		return e
	}
	if pk.Suite().Name != c.Suite {
		return fmt.Errorf("suite: got %s; want %s", pk.Suite().Name, c.Suite)
	}
	if pk.String() != c.PublicKey {
		return errors.New("public key does not re-encode to itself")
	}
	return hexEq("key", c.Key, pk.Bytes()[3:])
}

func checkHierarchy(c hierarchyCase) error {
	p, err := crypto.ParseKDFParams([]byte(c.KDFRecord))
	if err != nil {
		return err
	}
	mk, err := crypto.DeriveMasterKey([]byte(c.Password), p)
	if err != nil {
		return err
	}
	auth, wrap, err := crypto.DeriveSubkeys(mk)
	mk.Wipe()
	if err != nil {
		return err
	}
	if text, err := auth.Text(); err != nil || text != c.AuthKey {
		return fmt.Errorf("auth key: got %s (%v); want %s", text, err, c.AuthKey)
	}
	ak, err := crypto.UnwrapKey(wrap, crypto.AccountKeyContext(c.UserID), c.WrappedAccountKey)
	if err != nil {
		return fmt.Errorf("unwrap account key: %w", err)
	}
	if err := hexEq("account key", c.AccountKey, ak.RawForTest()); err != nil {
		return err
	}
	priv, err := crypto.UnwrapPrivateKey(ak, crypto.PrivateKeyContext(c.UserID), c.WrappedPrivateKey)
	if err != nil {
		return fmt.Errorf("unwrap private key: %w", err)
	}
	if priv.Public().String() != c.PublicKey {
		return errors.New("unwrapped private key does not match the public key")
	}
	ck, err := crypto.UnwrapKey(ak, crypto.ConversationKeyContext(c.UserID, c.ConversationID), c.WrappedConversationKey)
	if err != nil {
		return fmt.Errorf("unwrap conversation key: %w", err)
	}
	if err := hexEq("conversation key", c.ConversationKey, ck.RawForTest()); err != nil {
		return err
	}
	msg, err := crypto.Open(ck, crypto.MessageContext(c.UserID, c.MessageID), c.EncryptedMessage)
	if err != nil {
		return fmt.Errorf("open message: %w", err)
	}
	if string(msg) != c.Message {
		return fmt.Errorf("message: got %q; want %q", msg, c.Message)
	}
	tok, err := crypto.OpenSealed(priv, crypto.ProviderTokenContext(c.UserID, c.Provider), c.SealedToken)
	if err != nil {
		return fmt.Errorf("open sealed token: %w", err)
	}
	if string(tok) != c.Token {
		return fmt.Errorf("token: got %q; want %q", tok, c.Token)
	}
	return nil
}

// caseResult is one checked case.
type caseResult struct {
	Group, Name string
	Err         error
}

// checkAll checks every case of f with the Go implementation.
func checkAll(f *vectorFile) []caseResult {
	var out []caseResult
	add := func(g, n string, err error) { out = append(out, caseResult{g, n, err}) }
	for _, c := range f.KDF {
		add("kdf", c.Name, checkKDF(c))
	}
	for _, c := range f.Symmetric {
		add("symmetric", c.Name, checkSym(c))
	}
	for _, c := range f.Sealed {
		add("sealed", c.Name, checkSealed(c))
	}
	for _, c := range f.Wrap {
		add("wrap", c.Name, checkWrap(c))
	}
	for _, c := range f.PublicKey {
		add("public_keys", c.Name, checkPublicKey(c))
	}
	for _, c := range f.Hierarchy {
		add("hierarchy", c.Name, checkHierarchy(c))
	}
	return out
}
