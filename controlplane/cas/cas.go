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
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
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
	CodeNotFound                        // no such session or secret, or one the client may not see
	CodeForbidden                       // the client is not allowed by the access policy
	CodeConflict                        // the session exists already, or changed concurrently
	CodeUnauthenticated                 // the request carries no client certificate
	CodeLimit                           // a limit (Error.Limit says which) was reached
)

// Limit names a limit for error messages and metric labels (a closed set).
type Limit string

// Limits that a request can reach.
const (
	LimitDocumentSize      Limit = "document_size"
	LimitSecrets           Limit = "secrets"
	LimitGeneratedBytes    Limit = "generated_bytes"
	LimitKeyGeneration     Limit = "key_generation"
	LimitSessionsPerClient Limit = "sessions_per_client"
	LimitMeshesPerClient   Limit = "meshes_per_client"
	LimitRate              Limit = "rate"
)

// Error is a CAS refusal with its class and a message that says precisely why. Messages never
// contain secret values, nor anything about a session that the client may not read.
type Error struct {
	Code  Code
	Limit Limit // for CodeLimit
	Msg   string
	Err   error // the underlying error, if any (e.g. *session.Error with every problem)
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

func limitf(limit Limit, format string, args ...any) error {
	return &Error{Code: CodeLimit, Limit: limit, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the Code of a CAS error, or 0 for other errors (internal failures).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// LimitOf returns the Limit that a CodeLimit error reached, "" for other errors.
func LimitOf(err error) Limit {
	var e *Error
	if errors.As(err, &e) && e.Code == CodeLimit {
		return e.Limit
	}
	return ""
}

// notVisible is the one answer for a session that does not exist or that the client may not
// read: the two are indistinguishable to the client, so that nobody learns another owner's
// session names, secrets or export targets.
func notVisible(name string) error {
	return errorf(CodeNotFound, nil, "session %q not found or not permitted", name)
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

// Limits bound what one client can make the CAS store and compute. Zero fields take the
// defaults.
type Limits struct {
	// MaxSecrets bounds the secrets of one session (DefaultMaxSecrets).
	MaxSecrets int
	// MaxGeneratedBytes bounds the secret material kept for one session: ascii and binary
	// values, keys and certificates (DefaultMaxGeneratedBytes).
	MaxGeneratedBytes int
	// MaxNewRSAKeys bounds the RSA keys one create or update may generate: each costs up to a
	// second of CPU (DefaultMaxNewRSAKeys).
	MaxNewRSAKeys int
	// MaxSessionsPerClient bounds the sessions one client identity may create
	// (DefaultMaxSessionsPerClient).
	MaxSessionsPerClient int
	// MaxMeshesPerClient bounds the meshes one client identity may register
	// (DefaultMaxMeshesPerClient).
	MaxMeshesPerClient int
}

// Default limits.
const (
	DefaultMaxSecrets           = 128
	DefaultMaxGeneratedBytes    = 1 << 20
	DefaultMaxNewRSAKeys        = 4
	DefaultMaxSessionsPerClient = 1000
	DefaultMaxMeshesPerClient   = 100
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxSecrets, DefaultMaxSecrets)
	def(&l.MaxGeneratedBytes, DefaultMaxGeneratedBytes)
	def(&l.MaxNewRSAKeys, DefaultMaxNewRSAKeys)
	def(&l.MaxSessionsPerClient, DefaultMaxSessionsPerClient)
	def(&l.MaxMeshesPerClient, DefaultMaxMeshesPerClient)
	return l
}

// Config configures a CAS.
type Config struct {
	Store  store.Backend
	Limits Limits
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand supplies ascii and binary secrets; nil means crypto/rand.
	Rand io.Reader
	// OnChange, when set, is called after a session was created or updated (for metrics and
	// xDS updates). It must not block.
	OnChange func(name string)
	// MeshSessions reads the sessions that a mesh registration configures; required for the
	// mesh operations.
	MeshSessions MeshSessions
}

// CAS keeps sessions and their secrets. Safe for concurrent use: every write is an atomic
// compare-and-swap on the session's record.
type CAS struct {
	store    store.Backend
	limits   Limits
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	onChange func(string)
	rsaSlots chan struct{} // bounds concurrent RSA key generations (half the cores)
	meshMu   sync.Mutex    // serializes the validation and write of mesh registrations

	meshSessionsOf MeshSessions

	// decoded keeps the last parse of each stored session for the attestation path, which
	// reads the same few sessions for every workload: the parse is reused while the stored
	// bytes are the same.
	decodedMu sync.Mutex
	decoded   map[string]*decodedSession

	// looked keeps Lookup's results, each with the store's stamp taken before it was
	// computed: one is used again only while the store's stamp is still that one, that is
	// while no record changed, written by this replica or any other (see Stamper).
	lookedMu sync.Mutex
	looked   map[string]*lookedUp
}

// Stamper is a store that tells whether anything in it changed: Stamp's result changes with
// every write, this process's or another replica's, as soon as the write has returned
// (store.EncryptedBackend). A CAS whose store is a Stamper keeps Lookup's results while the
// stamp holds; over another store, it computes every Lookup afresh.
type Stamper interface {
	Stamp(ctx context.Context) (string, error)
}

var _ Stamper = (*store.EncryptedBackend)(nil)

// lookedUp is a result of Lookup and the stamp it is good for. Shared: nobody may modify s or
// vals.
type lookedUp struct {
	stamp string
	s     *session.Session
	vals  session.ValueMap
}

// decodedSession is a stored session and its parse. Shared: nobody may modify rec or s.
type decodedSession struct {
	raw []byte
	rec *record
	s   *session.Session
}

// maxDecoded bounds CAS.decoded; it starts over when full.
const maxDecoded = 4096

// New returns a CAS over cfg.Store.
func New(cfg Config) *CAS {
	c := &CAS{
		store: cfg.Store, limits: cfg.Limits.withDefaults(), log: cfg.Logger, now: cfg.Now, rand: cfg.Rand, onChange: cfg.OnChange,
		meshSessionsOf: cfg.MeshSessions, rsaSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)),
	}
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

// Create stores a new session, generating its secrets. The client becomes its CREATOR. A
// session "a/b" lives in the namespace of session "a": a must exist and its
// access_policy.create_sessions must allow the client (SCONE's namespaces), so that nobody can
// take a name that another owner's exports point to.
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
	nsCond, err := c.mayCreateIn(ctx, s.Name, client)
	if err != nil {
		return nil, err
	}
	if err := session.CheckImports(s, c.lookupFunc(ctx, client)); err != nil {
		return nil, errorf(CodeInvalid, err, "cannot create session %q", s.Name)
	}
	if err := c.checkQuota(ctx, client); err != nil {
		return nil, err
	}
	// A name that is taken fails before any key is generated (the store checks again).
	if _, err := c.store.Get(ctx, sessionPrefix+s.Name); err == nil {
		return nil, errorf(CodeConflict, nil, "session %q already exists: update it with predecessor set to its current hash", s.Name)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("cas: read session %q: %w", s.Name, err)
	}
	secrets, changed, err := c.generate(ctx, s, nil)
	if err != nil {
		return nil, err
	}
	now := c.now().UTC()
	rec := &record{Raw: raw, Hash: session.Hash(raw), Creator: client.ID, Created: now, Updated: now, Secrets: secrets}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("cas: encode session %q: %w", s.Name, err)
	}
	// Stored only if the name is still free and the namespace still says what it said when it
	// let the client in (its owner may have changed it while the keys were generated).
	conds := []store.Cond{{Key: sessionPrefix + s.Name}}
	if nsCond != nil {
		conds = append(conds, *nsCond)
	}
	if err := c.store.Apply(ctx, conds, []store.Write{{Key: sessionPrefix + s.Name, Value: val}}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			if _, getErr := c.store.Get(ctx, sessionPrefix+s.Name); getErr == nil {
				return nil, errorf(CodeConflict, nil, "session %q already exists: update it with predecessor set to its current hash", s.Name)
			}
			return nil, errorf(CodeConflict, nil, "cannot create session %q: its namespace session changed meanwhile; retry", s.Name)
		}
		return nil, fmt.Errorf("cas: store session %q: %w", s.Name, err)
	}
	c.log.InfoContext(ctx, "session created", "session", s.Name, "hash", rec.Hash, "secrets_generated", len(changed))
	c.changed(s.Name)
	info := rec.info(s.Name, false)
	info.Changed = changed
	return info, nil
}

// Namespace returns the namespace session of a session name ("a/b" for "a/b/c") and whether
// it has one (a top-level name has none).
func Namespace(name string) (string, bool) {
	i := strings.LastIndexByte(name, '/')
	if i <= 0 {
		return "", false
	}
	return name[:i], true
}

// mayCreateIn checks the namespace rule for creating session name. It returns the condition
// that the namespace session must still meet when the new session is stored (nil for a
// top-level name).
func (c *CAS) mayCreateIn(ctx context.Context, name string, client Client) (*store.Cond, error) {
	ns, ok := Namespace(name)
	if !ok {
		return nil, nil
	}
	nsRaw, rec, nsSession, err := c.load(ctx, ns)
	if err != nil && CodeOf(err) != CodeNotFound {
		return nil, err
	}
	readable := err == nil && allowed(nsSession.AccessPolicy.Read, rec.Creator, client) == nil
	if err == nil && allowed(nsSession.AccessPolicy.CreateSessions, rec.Creator, client) == nil {
		return &store.Cond{Key: sessionPrefix + ns, Value: nsRaw}, nil
	}
	c.log.InfoContext(ctx, "session creation refused by its namespace", "session", name, "namespace", ns, "namespace_exists", err == nil)
	switch {
	case readable:
		return nil, errorf(CodeForbidden, nil, "cannot create session %q: namespace session %q does not let this client create sessions in it "+
			"(its access_policy.create_sessions is %s)", name, ns, describePolicy(nsSession.AccessPolicy.CreateSessions))
	default:
		return nil, errorf(CodeForbidden, nil, "cannot create session %q: its namespace session %q does not exist or does not let this client "+
			"create sessions in it: create session %q first (attestmesh apply and up do), or ask its owner to add you to its access_policy.create_sessions",
			name, ns, ns)
	}
}

// checkQuota refuses a create once the client has created MaxSessionsPerClient sessions.
func (c *CAS) checkQuota(ctx context.Context, client Client) error {
	kvs, err := c.store.List(ctx, sessionPrefix)
	if err != nil {
		return fmt.Errorf("cas: list sessions: %w", err)
	}
	n := 0
	for _, kv := range kvs {
		var owner struct {
			Creator string `json:"creator"`
		}
		if json.Unmarshal(kv.Value, &owner) == nil && owner.Creator == client.ID {
			n++
		}
	}
	if n >= c.limits.MaxSessionsPerClient {
		return limitf(LimitSessionsPerClient, "this client has created %d sessions, the most one client may create (--max-sessions-per-client)", n)
	}
	return nil
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
		if CodeOf(err) == CodeNotFound {
			return nil, notVisible(s.Name)
		}
		return nil, err
	}
	if err := allowed(curSession.AccessPolicy.Update, cur.Creator, client); err != nil {
		if allowed(curSession.AccessPolicy.Read, cur.Creator, client) != nil {
			return nil, notVisible(s.Name)
		}
		return nil, errorf(CodeForbidden, nil, "update of session %q refused: %v", s.Name, err)
	}
	if err := session.CheckUpdate(s, curSession, cur.Hash); err != nil {
		return nil, errorf(CodeConflict, err, "cannot update session %q", s.Name)
	}
	if err := session.CheckImports(s, c.lookupFunc(ctx, client)); err != nil {
		return nil, errorf(CodeInvalid, err, "cannot update session %q", s.Name)
	}
	secrets, changed, err := c.generate(ctx, s, cur.Secrets)
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

// Delete removes a session. Its updaters may delete it, and so may the updaters of its
// namespace session (a namespace's owner can clear out what others created in it). A session
// that has sessions in its namespace is deleted only after them: otherwise its name, and with
// it their namespace, would be free for anyone to take. The delete happens only if the session
// is still what was read. Workloads of a deleted session fail their next attestation or
// renewal; importers of its secrets fail theirs with import_refused.
func (c *CAS) Delete(ctx context.Context, name string, client Client) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "deleting a session needs a client certificate")
	}
	raw, rec, s, err := c.load(ctx, name)
	if err != nil {
		if CodeOf(err) == CodeNotFound {
			return notVisible(name)
		}
		return err
	}
	if err := allowed(s.AccessPolicy.Update, rec.Creator, client); err != nil && !c.ownsNamespaceOf(ctx, name, client) {
		if allowed(s.AccessPolicy.Read, rec.Creator, client) != nil {
			return notVisible(name)
		}
		return errorf(CodeForbidden, nil, "deleting session %q refused: %v (its updaters and its namespace's updaters may delete it)", name, err)
	}
	children, err := c.store.List(ctx, sessionPrefix+name+"/")
	if err != nil {
		return fmt.Errorf("cas: list sessions: %w", err)
	}
	if len(children) > 0 {
		return errorf(CodeConflict, nil, "session %q has %d sessions in its namespace (such as %q): delete them first",
			name, len(children), strings.TrimPrefix(children[0].Key, sessionPrefix))
	}
	if err := c.store.CompareAndSwap(ctx, sessionPrefix+name, raw, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(CodeConflict, nil, "session %q changed concurrently; read it again and retry", name)
		}
		return fmt.Errorf("cas: delete session %q: %w", name, err)
	}
	c.log.InfoContext(ctx, "session deleted", "session", name, "hash", rec.Hash)
	c.changed(name)
	return nil
}

// ownsNamespaceOf reports whether client may update the namespace session of name.
func (c *CAS) ownsNamespaceOf(ctx context.Context, name string, client Client) bool {
	ns, ok := Namespace(name)
	if !ok {
		return false
	}
	_, rec, s, err := c.load(ctx, ns)
	return err == nil && allowed(s.AccessPolicy.Update, rec.Creator, client) == nil
}

// Get returns a session's document if the client may read it.
func (c *CAS) Get(ctx context.Context, name string, client Client) (*Info, error) {
	if client.ID == "" {
		return nil, errorf(CodeUnauthenticated, nil, "reading a session needs a client certificate")
	}
	_, rec, s, err := c.load(ctx, name)
	if err != nil {
		if CodeOf(err) == CodeNotFound {
			return nil, notVisible(name)
		}
		return nil, err
	}
	if err := allowed(s.AccessPolicy.Read, rec.Creator, client); err != nil {
		c.log.InfoContext(ctx, "session read refused", "session", name, "reason", err.Error())
		return nil, notVisible(name)
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
		if CodeOf(err) == CodeNotFound {
			return notVisible(name)
		}
		return err
	}
	if err := allowed(s.AccessPolicy.Update, rec.Creator, client); err != nil {
		if allowed(s.AccessPolicy.Read, rec.Creator, client) != nil {
			return notVisible(name)
		}
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
	// One answer for a missing session, a missing secret and a secret that is not public:
	// anonymous callers learn nothing of which sessions exist.
	none := errorf(CodeNotFound, nil, "no public secret %q in session %q (only secrets with export_public: true are readable, "+
		"of sessions that exist)", secret, name)
	_, rec, s, err := c.load(ctx, name)
	if CodeOf(err) == CodeNotFound {
		return nil, none
	}
	if err != nil {
		return nil, err
	}
	def, ok := s.Secret(secret)
	if !ok || !def.ExportPublic {
		return nil, none
	}
	v, ok := rec.Secrets[secret]
	if !ok || len(v.CertPEM) == 0 {
		return nil, none
	}
	return slices.Clone(v.CertPEM), nil
}

// Lookup returns a session's policy and its secret values, imports resolved against the
// exporting sessions as they are now. It is for the attestation service: no access policy
// applies, the caller has attested. An import that the exporter no longer grants (no longer
// exported to this session or to this exact document, or a hardware exporter and a session
// that accepts simulation) fails with an *ImportError.
//
// Lookup is on every attestation's path: over a Stamper store, it gives the result it computed
// before as long as the store's stamp says that nothing changed since (one small read instead
// of reading, opening and resolving every record involved). Failures are never kept.
func (c *CAS) Lookup(ctx context.Context, name string) (*session.Session, session.Values, error) {
	st, ok := c.store.(Stamper)
	if !ok {
		return c.lookup(ctx, name)
	}
	stamp, err := st.Stamp(ctx)
	if errors.Is(err, store.ErrRollback) {
		// An older sealed state was put back: the records read now would be the rolled-back
		// ones. Fail closed, as opening the store does.
		return nil, nil, fmt.Errorf("cas: session %q: %w", name, err)
	}
	if err != nil {
		// Nothing can be known to be current: compute afresh, and keep nothing.
		return c.lookup(ctx, name)
	}
	c.lookedMu.Lock()
	l := c.looked[name]
	c.lookedMu.Unlock()
	if l != nil && l.stamp == stamp {
		return l.s, l.vals, nil
	}
	// The stamp was taken before anything is read: if a write lands while this Lookup reads,
	// the stamp moves on and what is kept here is never used.
	s, vals, err := c.lookup(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	c.lookedMu.Lock()
	if c.looked == nil || len(c.looked) >= maxDecoded {
		c.looked = map[string]*lookedUp{}
	}
	c.looked[name] = &lookedUp{stamp: stamp, s: s, vals: vals}
	c.lookedMu.Unlock()
	return s, vals, nil
}

// lookup is Lookup computed from the stored records.
func (c *CAS) lookup(ctx context.Context, name string) (*session.Session, session.ValueMap, error) {
	rec, s, err := c.loadShared(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	vals := session.ValueMap{}
	for i := range s.Secrets {
		def := &s.Secrets[i]
		if def.Import != nil {
			v, err := c.imported(ctx, s, rec.Hash, def)
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

// ImportError is an import that its exporter does not grant (any more): the attestation
// service refuses the workload with its own reason.
type ImportError struct {
	Importer, Exporter, Secret string
	Why                        string
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("cas: session %q imports secret %q from session %q: %s", e.Importer, e.Secret, e.Exporter, e.Why)
}

// imported resolves an import against the exporting session's current record, checking again
// what CheckImports checked at create and update, since the exporter may have changed since:
// the secret is still exported to the importer (and to its exact document where the export pins
// session_hash), and the modes fit. A certificate comes with its private key only where the
// exporter exports the certificate's private_key secret to the importer as well.
func (c *CAS) imported(ctx context.Context, importer *session.Session, importerHash string, def *session.Secret) (session.Value, error) {
	refuse := func(why string) error {
		return &ImportError{Importer: importer.Name, Exporter: def.Import.Session, Secret: def.Import.Secret, Why: why}
	}
	rec, from, err := c.loadShared(ctx, def.Import.Session)
	if CodeOf(err) == CodeNotFound {
		return session.Value{}, refuse("the exporting session does not exist")
	}
	if err != nil {
		return session.Value{}, fmt.Errorf("cas: session %q imports %q from session %q: %w", importer.Name, def.Import.Secret, def.Import.Session, err)
	}
	exp, ok := from.Secret(def.Import.Secret)
	switch {
	case !ok:
		return session.Value{}, refuse("the exporting session has no such secret")
	case !exp.ExportedTo(importer.Name, importerHash):
		return session.Value{}, refuse("the secret is not exported to this session (or not to this version of it: session_hash)")
	case exp.Import != nil:
		return session.Value{}, refuse("the secret is itself imported and cannot be imported again")
	}
	if err := session.CheckImportMode(from, importer); err != nil {
		return session.Value{}, refuse(strings.TrimPrefix(err.Error(), "session: "))
	}
	if why := session.PinnedOwnersProblem(exp, importer); why != "" {
		return session.Value{}, refuse(why)
	}
	st, ok := rec.Secrets[exp.Name]
	if !ok {
		return session.Value{}, fmt.Errorf("cas: session %q: secret %q missing from the stored record", from.Name, exp.Name)
	}
	v := st.value()
	if v.Kind.IsCertificate() && !session.KeyExported(from, exp, importer.Name, importerHash) {
		v.KeyPEM = nil
	}
	return v, nil
}

// lookupFunc is CheckImports' view of the exporting sessions for client: a session the client
// may not read (or that does not exist) is reported as not readable, so that its problems say
// only "not found or not permitted".
func (c *CAS) lookupFunc(ctx context.Context, client Client) session.Lookup {
	return func(name string) (*session.Session, bool) {
		_, rec, s, err := c.load(ctx, name)
		if err != nil {
			return nil, false
		}
		return s, allowed(s.AccessPolicy.Read, rec.Creator, client) == nil
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

// loadShared is load for readers that modify neither the record nor the session: the parse
// of unchanged bytes is shared with earlier calls.
func (c *CAS) loadShared(ctx context.Context, name string) (*record, *session.Session, error) {
	raw, err := c.store.Get(ctx, sessionPrefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errorf(CodeNotFound, nil, "session %q does not exist", name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cas: read session %q: %w", name, err)
	}
	c.decodedMu.Lock()
	d := c.decoded[name]
	c.decodedMu.Unlock()
	if d != nil && bytes.Equal(d.raw, raw) {
		return d.rec, d.s, nil
	}
	rec, s, err := decode(name, raw)
	if err != nil {
		return nil, nil, err
	}
	c.decodedMu.Lock()
	if c.decoded == nil || len(c.decoded) >= maxDecoded {
		c.decoded = map[string]*decodedSession{}
	}
	c.decoded[name] = &decodedSession{raw: raw, rec: rec, s: s}
	c.decodedMu.Unlock()
	return rec, s, nil
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
