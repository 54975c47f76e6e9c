// Package cas is the heart of the control plane, what SCONE's CAS is to its users: it keeps the
// sessions (security policies), generates and keeps the secrets they describe, decides who may
// read and update each session (access_policy), and gives the attestation service a session's
// policy and the secret values that render its services' configuration.
//
// State lives in a store.Backend (encrypted at rest by the caller's store.Encrypted): one record
// per session under "sessions/<name>" holding the document exactly as uploaded, its hash, its
// creator and its generated secrets, written atomically with CompareAndSwap, so a session and
// its secrets never disagree and a concurrent update is refused rather than lost.
package cas

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

const sessionPrefix = "sessions/"

// Code classifies a CAS error; the management API maps it to an HTTP status in one place.
type Code int

// Error codes.
const (
	CodeInvalid         Code = iota + 1 // the document is malformed or breaks a rule
	CodeNotFound                        // no such session or secret
	CodeForbidden                       // the client is not allowed by the access policy
	CodeConflict                        // the session exists already, or changed concurrently
	CodeUnauthenticated                 // the request carries no client certificate
)

// Error is a CAS refusal with its class and a message that says precisely why. Messages never
// contain secret values.
type Error struct {
	Code Code
	Msg  string
	Err  error // the underlying error, if any (e.g. *session.Error with every problem)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return "cas: " + e.Msg + ": " + e.Err.Error()
	}
	return "cas: " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(code Code, wrapped error, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: wrapped}
}

// CodeOf returns the Code of a CAS error, or 0 for other errors (internal failures).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// Client is the authenticated caller of the management API: the public key of its TLS client
// certificate. The zero Client is unauthenticated.
type Client struct {
	// ID is the hex SHA-256 of the client certificate's SubjectPublicKeyInfo, so a client
	// keeps its identity when it renews its certificate with the same key.
	ID string
}

// ClientFromCert derives the Client of a TLS client certificate.
func ClientFromCert(cert *x509.Certificate) Client {
	if cert == nil {
		return Client{}
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return Client{ID: hex.EncodeToString(sum[:])}
}

// Config configures a CAS.
type Config struct {
	Store  store.Backend
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand supplies ascii and binary secrets; nil means crypto/rand.
	Rand io.Reader
	// OnChange, when set, is called after a session was created or updated (for metrics and
	// xDS updates). It must not block.
	OnChange func(name string)
}

// CAS keeps sessions and their secrets. Safe for concurrent use: every write is an atomic
// compare-and-swap on the session's record.
type CAS struct {
	store    store.Backend
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	onChange func(string)
}

// New returns a CAS over cfg.Store.
func New(cfg Config) *CAS {
	c := &CAS{store: cfg.Store, log: cfg.Logger, now: cfg.Now, rand: cfg.Rand, onChange: cfg.OnChange}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// record is the stored form of a session.
type record struct {
	Raw     []byte                  `json:"raw"`
	Hash    string                  `json:"hash"`
	Creator string                  `json:"creator"`
	Created time.Time               `json:"created"`
	Updated time.Time               `json:"updated"`
	Secrets map[string]storedSecret `json:"secrets"`
}

// Info describes a stored session.
type Info struct {
	Name    string    `json:"name"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Document is the session exactly as uploaded; empty in List results.
	Document []byte `json:"-"`
	// Changed lists, for a create or update, the secrets generated or re-issued (names only).
	Changed []string `json:"changed,omitempty"`
}

func (r *record) info(name string, withDoc bool) *Info {
	i := &Info{Name: name, Hash: r.Hash, Created: r.Created, Updated: r.Updated}
	if withDoc {
		i.Document = r.Raw
	}
	return i
}

// parse parses and validates a document, naming every problem.
func parse(raw []byte) (*session.Session, error) {
	s, err := session.Parse(raw)
	if err != nil {
		return nil, errorf(CodeInvalid, err, "invalid session")
	}
	if err := s.Validate(); err != nil {
		return nil, errorf(CodeInvalid, err, "invalid session %q", s.Name)
	}
	return s, nil
}

// Create stores a new session, generating its secrets. The client becomes its CREATOR.
func (c *CAS) Create(ctx context.Context, raw []byte, client Client) (*Info, error) {
	if client.ID == "" {
		return nil, errorf(CodeUnauthenticated, nil, "creating a session needs a client certificate")
	}
	s, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if err := session.CheckCreate(s); err != nil {
		return nil, errorf(CodeInvalid, err, "cannot create session %q", s.Name)
	}
	if err := session.CheckImports(s, c.lookupFunc(ctx)); err != nil {
		return nil, errorf(CodeInvalid, err, "cannot create session %q", s.Name)
	}
	secrets, changed, err := generate(s, nil, c.now(), c.rand)
	if err != nil {
		return nil, err
	}
	now := c.now().UTC()
	rec := &record{Raw: raw, Hash: session.Hash(raw), Creator: client.ID, Created: now, Updated: now, Secrets: secrets}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("cas: encode session %q: %w", s.Name, err)
	}
	if err := c.store.CompareAndSwap(ctx, sessionPrefix+s.Name, nil, val); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errorf(CodeConflict, nil, "session %q already exists: update it with predecessor set to its current hash", s.Name)
		}
		return nil, fmt.Errorf("cas: store session %q: %w", s.Name, err)
	}
	c.log.InfoContext(ctx, "session created", "session", s.Name, "hash", rec.Hash, "secrets_generated", len(changed))
	c.changed(s.Name)
	info := rec.info(s.Name, false)
	info.Changed = changed
	return info, nil
}

// Update replaces a session. The client must be allowed by the current session's update
// policy, and the document's predecessor must be the current hash. Keys and ascii/binary
// values are kept; certificates are re-issued from the same keys.
func (c *CAS) Update(ctx context.Context, raw []byte, client Client) (*Info, error) {
	if client.ID == "" {
		return nil, errorf(CodeUnauthenticated, nil, "updating a session needs a client certificate")
	}
	s, err := parse(raw)
	if err != nil {
		return nil, err
	}
	curRaw, cur, curSession, err := c.load(ctx, s.Name)
	if err != nil {
		return nil, err
	}
	if err := allowed(curSession.AccessPolicy.Update, cur.Creator, client); err != nil {
		return nil, errorf(CodeForbidden, nil, "update of session %q refused: %v", s.Name, err)
	}
	if err := session.CheckUpdate(s, curSession, cur.Hash); err != nil {
		return nil, errorf(CodeConflict, err, "cannot update session %q", s.Name)
	}
	if err := session.CheckImports(s, c.lookupFunc(ctx)); err != nil {
		return nil, errorf(CodeInvalid, err, "cannot update session %q", s.Name)
	}
	secrets, changed, err := generate(s, cur.Secrets, c.now(), c.rand)
	if err != nil {
		return nil, err
	}
	rec := &record{Raw: raw, Hash: session.Hash(raw), Creator: cur.Creator, Created: cur.Created, Updated: c.now().UTC(), Secrets: secrets}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("cas: encode session %q: %w", s.Name, err)
	}
	if err := c.store.CompareAndSwap(ctx, sessionPrefix+s.Name, curRaw, val); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errorf(CodeConflict, nil, "session %q changed concurrently: predecessor is stale, fetch the current hash and retry", s.Name)
		}
		return nil, fmt.Errorf("cas: store session %q: %w", s.Name, err)
	}
	c.log.InfoContext(ctx, "session updated", "session", s.Name, "hash", rec.Hash, "predecessor", cur.Hash, "secrets_changed", len(changed))
	c.changed(s.Name)
	info := rec.info(s.Name, false)
	info.Changed = changed
	return info, nil
}

func (c *CAS) changed(name string) {
	if c.onChange != nil {
		c.onChange(name)
	}
}

// Get returns a session's document if the client may read it.
func (c *CAS) Get(ctx context.Context, name string, client Client) (*Info, error) {
	if client.ID == "" {
		return nil, errorf(CodeUnauthenticated, nil, "reading a session needs a client certificate")
	}
	_, rec, s, err := c.load(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := allowed(s.AccessPolicy.Read, rec.Creator, client); err != nil {
		return nil, errorf(CodeForbidden, nil, "read of session %q refused: %v", name, err)
	}
	return rec.info(name, true), nil
}

// List returns the sessions the client may read, by name.
func (c *CAS) List(ctx context.Context, client Client) ([]*Info, error) {
	if client.ID == "" {
		return nil, errorf(CodeUnauthenticated, nil, "listing sessions needs a client certificate")
	}
	kvs, err := c.store.List(ctx, sessionPrefix)
	if err != nil {
		return nil, fmt.Errorf("cas: list sessions: %w", err)
	}
	out := []*Info{}
	for _, kv := range kvs {
		name := kv.Key[len(sessionPrefix):]
		rec, s, err := decode(name, kv.Value)
		if err != nil {
			return nil, err
		}
		if allowed(s.AccessPolicy.Read, rec.Creator, client) == nil {
			out = append(out, rec.info(name, false))
		}
	}
	return out, nil
}

// MayUpdate returns nil when client may update session name (its update policy), else why
// not. A mesh registration, which configures the session's sidecars, needs it.
func (c *CAS) MayUpdate(ctx context.Context, name string, client Client) error {
	_, rec, s, err := c.load(ctx, name)
	if err != nil {
		return err
	}
	if err := allowed(s.AccessPolicy.Update, rec.Creator, client); err != nil {
		return errorf(CodeForbidden, nil, "session %q refuses this client: %v", name, err)
	}
	return nil
}

// Count returns the number of stored sessions.
func (c *CAS) Count(ctx context.Context) (int, error) {
	kvs, err := c.store.List(ctx, sessionPrefix)
	if err != nil {
		return 0, fmt.Errorf("cas: list sessions: %w", err)
	}
	return len(kvs), nil
}

// PublicValue returns the certificate (PEM) of a secret marked export_public. No
// authentication is needed; nothing else is readable this way.
func (c *CAS) PublicValue(ctx context.Context, name, secret string) ([]byte, error) {
	_, rec, s, err := c.load(ctx, name)
	if err != nil {
		return nil, err
	}
	def, ok := s.Secret(secret)
	if !ok || !def.ExportPublic {
		// Do not reveal whether a non-public secret exists.
		return nil, errorf(CodeNotFound, nil, "session %q has no public secret %q (only secrets with export_public: true are readable)", name, secret)
	}
	v, ok := rec.Secrets[secret]
	if !ok || len(v.CertPEM) == 0 {
		return nil, errorf(CodeNotFound, nil, "session %q has no public secret %q", name, secret)
	}
	return slices.Clone(v.CertPEM), nil
}

// Lookup returns a session's policy and its secret values, imports resolved against the
// exporting sessions as they are now. It is for the attestation service: no access policy
// applies, the caller has attested.
func (c *CAS) Lookup(ctx context.Context, name string) (*session.Session, session.Values, error) {
	_, rec, s, err := c.load(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	vals := session.ValueMap{}
	for i := range s.Secrets {
		def := &s.Secrets[i]
		if def.Import != nil {
			v, err := c.imported(ctx, s.Name, def)
			if err != nil {
				return nil, nil, err
			}
			vals[def.Name] = v
			continue
		}
		st, ok := rec.Secrets[def.Name]
		if !ok {
			return nil, nil, fmt.Errorf("cas: session %q: secret %q missing from the stored record", name, def.Name)
		}
		vals[def.Name] = st.value()
	}
	return s, vals, nil
}

// imported resolves an import against the exporting session's current record, checking again
// that the secret is still exported to the importer.
func (c *CAS) imported(ctx context.Context, importer string, def *session.Secret) (session.Value, error) {
	_, rec, from, err := c.load(ctx, def.Import.Session)
	if err != nil {
		return session.Value{}, fmt.Errorf("cas: session %q imports %q from session %q: %w", importer, def.Import.Secret, def.Import.Session, err)
	}
	exp, ok := from.Secret(def.Import.Secret)
	if !ok || !exp.ExportedTo(importer) {
		return session.Value{}, errorf(CodeForbidden, nil, "session %q imports secret %q from session %q, which no longer exports it to %q", importer, def.Import.Secret, def.Import.Session, importer)
	}
	if exp.Import != nil {
		return c.imported(ctx, from.Name, exp)
	}
	st, ok := rec.Secrets[exp.Name]
	if !ok {
		return session.Value{}, fmt.Errorf("cas: session %q: secret %q missing from the stored record", from.Name, exp.Name)
	}
	return st.value(), nil
}

func (c *CAS) lookupFunc(ctx context.Context) func(string) (*session.Session, bool) {
	return func(name string) (*session.Session, bool) {
		_, _, s, err := c.load(ctx, name)
		return s, err == nil
	}
}

// load reads a session record and its parsed document.
func (c *CAS) load(ctx context.Context, name string) ([]byte, *record, *session.Session, error) {
	raw, err := c.store.Get(ctx, sessionPrefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, errorf(CodeNotFound, nil, "session %q does not exist", name)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cas: read session %q: %w", name, err)
	}
	rec, s, err := decode(name, raw)
	if err != nil {
		return nil, nil, nil, err
	}
	return raw, rec, s, nil
}

func decode(name string, raw []byte) (*record, *session.Session, error) {
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, nil, fmt.Errorf("cas: decode stored session %q: %w", name, err)
	}
	s, err := session.Parse(rec.Raw)
	if err != nil {
		return nil, nil, fmt.Errorf("cas: stored session %q no longer parses: %w", name, err)
	}
	return &rec, s, nil
}

// allowed checks one access policy list (read or update) for client.
func allowed(policy []string, creator string, client Client) error {
	if len(policy) == 0 {
		policy = []string{session.PolicyCreator}
	}
	for _, p := range policy {
		switch p {
		case session.PolicyNone:
			return errors.New("the access policy is NONE")
		case session.PolicyAny:
			return nil
		case session.PolicyCreator:
			if client.ID == creator {
				return nil
			}
		default:
			certs, err := parseCertPEM(p)
			if err == nil && ClientFromCert(certs).ID == client.ID {
				return nil
			}
		}
	}
	return fmt.Errorf("client %s… is not in the access policy %s", shortID(client.ID), describePolicy(policy))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func describePolicy(policy []string) string {
	out := make([]string, len(policy))
	for i, p := range policy {
		switch p {
		case session.PolicyAny, session.PolicyCreator, session.PolicyNone:
			out[i] = p
		default:
			out[i] = "certificate"
		}
	}
	return fmt.Sprint(out)
}

// Session returns a session's parsed policy without its secrets (for the sidecar injector,
// which needs the injection paths). No access policy applies: nothing secret is returned.
func (c *CAS) Session(ctx context.Context, name string) (*session.Session, error) {
	_, _, s, err := c.load(ctx, name)
	return s, err
}
