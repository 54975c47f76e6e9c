// Package mgmt is the control plane's management API (HTTPS, default port 8081): create,
// update, read and list sessions, authenticated by TLS client certificate and authorized by
// each session's access_policy; and, without authentication, the control plane's CA bundle and
// the public values of secrets marked export_public, and the control plane's attestation
// evidence, whose quote binds the CA's key and the caller's nonce.
//
//	POST /v1/sessions                    create (body: the session YAML)        201
//	PUT  /v1/sessions/{name}             update (body: YAML with predecessor)  200
//	GET  /v1/sessions/{name}             read (JSON: name, hash, document)     200
//	GET  /v1/sessions                    list the sessions the client may read 200
//	DELETE /v1/sessions/{name}           delete (its or its namespace's updaters) 204
//	GET  /v1/public/{session}/{secret}   public certificate (PEM), no auth     200
//	GET  /v1/ca                          the control plane's CA bundle (PEM)   200
//	GET  /v1/attestation?nonce=HEX       the control plane's evidence (JSON, see controlplane/evidence), no auth 200
//	PUT  /v1/meshes/{name}               register a mesh (JSON, see mgmtapi.Registration) 204
//	DELETE /v1/meshes/{name}             remove a mesh registration            204
//
// Session names may contain '/'. Every refusal is a 4xx with a JSON body {"error": "..."} that
// says why, and is counted by reason in attestmesh_management_requests_total; internal failures
// are a 500 that names no internal state. A session the client may not read is "not found or not
// permitted", whether it exists or not. Each client identity (and each address, for requests
// without one) has its own request rate, and so does each source network (a /24 or /64), with
// a slower one for requests that make the store grow; past them, requests get 429. Evidence
// costs a quote each: it has its own, lower rate per source address and network, and one for
// all callers together.
package mgmt

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/ratelimit"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// MaxDocumentSize bounds an uploaded session document.
const MaxDocumentSize = 1 << 20

// Config configures the management API.
type Config struct {
	CAS *cas.CAS
	// BundlePEM is the control plane's CA bundle, served at /v1/ca.
	BundlePEM []byte
	// ValidateMesh checks a mesh registration from client, once the CAS has checked the
	// client's rights and atomically with the write (see cas.PutMesh); nil accepts any. A CAS
	// error it returns (e.g. CodeForbidden) keeps its code.
	ValidateMesh func(ctx context.Context, name string, doc []byte, client cas.Client) error
	// ClientRate and ClientBurst bound each client identity's requests (per second; defaults
	// DefaultClientRate and DefaultClientBurst); requests without a client certificate are
	// bounded the same way per source address. A negative rate disables the limit.
	ClientRate  float64
	ClientBurst int
	// CreateRate and CreateBurst bound, per source network (ratelimit.SourcePrefix), the
	// requests that make the store grow: session creations and mesh registrations (defaults
	// DefaultCreateRate and DefaultCreateBurst). Client identities cost nothing to make, so this
	// is what bounds the growth of a store that anyone may write to. A negative rate disables it.
	CreateRate  float64
	CreateBurst int
	// Evidence, when set, makes the control plane's evidence for a caller's nonce (see
	// controlplane/evidence.Issuer), served at GET /v1/attestation?nonce=HEX; nil answers that
	// this control plane serves none.
	Evidence func(ctx context.Context, nonce [32]byte) ([]byte, error)
	// EvidenceRate and EvidenceBurst bound evidence requests per source address, and, at
	// ratelimit.PrefixFactor times that, per source network (defaults DefaultEvidenceRate and
	// DefaultEvidenceBurst); EvidenceTotalRate and EvidenceTotalBurst bound them all together
	// (DefaultEvidenceTotalRate, DefaultEvidenceTotalBurst), since every one costs a quote. A
	// negative rate disables its limit.
	EvidenceRate       float64
	EvidenceBurst      int
	EvidenceTotalRate  float64
	EvidenceTotalBurst int
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Default request rates.
const (
	DefaultClientRate  = 20
	DefaultClientBurst = 100
	DefaultCreateRate  = 1
	DefaultCreateBurst = 100
	// Evidence: per source address (and PrefixFactor times that per network), and in total.
	DefaultEvidenceRate       = 1
	DefaultEvidenceBurst      = 5
	DefaultEvidenceTotalRate  = 10
	DefaultEvidenceTotalBurst = 20
)

// growing names the operations that make the store grow.
var growing = map[string]bool{"create_session": true, "put_mesh": true}

// Handler serves the management API.
type Handler struct {
	cfg      Config
	cas      *cas.CAS
	log      *slog.Logger
	mux      *http.ServeMux
	limiter  *ratelimit.Limiter // per client identity, or per address when anonymous
	prefixes *ratelimit.Limiter // per source network: ratelimit.PrefixFactor times more
	creates  *ratelimit.Limiter // store-growing requests per source network
	evidence *ratelimit.Pair    // evidence requests per source address and network
	quotes   *ratelimit.Limiter // evidence requests of everyone, under one key
	requests *prometheus.CounterVec
}

// NewHandler returns the management API.
func NewHandler(cfg Config) *Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientRate == 0 {
		cfg.ClientRate = DefaultClientRate
	}
	if cfg.ClientBurst == 0 {
		cfg.ClientBurst = DefaultClientBurst
	}
	if cfg.CreateRate == 0 {
		cfg.CreateRate = DefaultCreateRate
	}
	if cfg.CreateBurst == 0 {
		cfg.CreateBurst = DefaultCreateBurst
	}
	cfg.EvidenceRate, cfg.EvidenceBurst = cmp.Or(cfg.EvidenceRate, DefaultEvidenceRate), cmp.Or(cfg.EvidenceBurst, DefaultEvidenceBurst)
	cfg.EvidenceTotalRate, cfg.EvidenceTotalBurst = cmp.Or(cfg.EvidenceTotalRate, DefaultEvidenceTotalRate), cmp.Or(cfg.EvidenceTotalBurst, DefaultEvidenceTotalBurst)
	h := &Handler{
		cfg: cfg, cas: cfg.CAS, log: log.With("subsystem", "mgmt"), mux: http.NewServeMux(),
		limiter:  ratelimit.New(ratelimit.Config{Rate: cfg.ClientRate, Burst: cfg.ClientBurst}),
		prefixes: ratelimit.New(ratelimit.Config{Rate: cfg.ClientRate * ratelimit.PrefixFactor, Burst: cfg.ClientBurst * ratelimit.PrefixFactor}),
		creates:  ratelimit.New(ratelimit.Config{Rate: cfg.CreateRate, Burst: cfg.CreateBurst}),
		evidence: ratelimit.NewPair(ratelimit.Config{Rate: cfg.EvidenceRate, Burst: cfg.EvidenceBurst}),
		quotes:   ratelimit.New(ratelimit.Config{Rate: cfg.EvidenceTotalRate, Burst: cfg.EvidenceTotalBurst, MaxKeys: 1}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_management_requests_total",
			Help: "Management API requests by operation and result: ok, or the refusal's reason (invalid, not_found, forbidden, conflict, unauthenticated, limit_<limit>, internal).",
		}, []string{"operation", "result"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(h.requests)
	}
	route := func(pattern, op string, f func(http.ResponseWriter, *http.Request)) {
		h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			r = r.WithContext(withOperation(r.Context(), op))
			// A new client identity costs nothing to make, so every request also counts
			// against its source network.
			if !h.limiter.Allow(rateKey(r)) || !h.prefixes.Allow(ratelimit.SourcePrefix(remoteHost(r))) {
				w.Header().Set("Retry-After", "1")
				h.fail(w, r, &cas.Error{Code: cas.CodeLimit, Limit: cas.LimitRate, Msg: fmt.Sprintf(
					"too many requests from this client or its network: at most %g per second (bursts of %d) per client, "+
						"%d times that per network; retry later", cfg.ClientRate, cfg.ClientBurst, ratelimit.PrefixFactor)})
				return
			}
			if growing[op] && !h.creates.Allow(ratelimit.SourcePrefix(remoteHost(r))) {
				w.Header().Set("Retry-After", "10")
				h.fail(w, r, &cas.Error{Code: cas.CodeLimit, Limit: cas.LimitRate, Msg: fmt.Sprintf(
					"too many sessions and meshes created from this network: at most %g per second (bursts of %d); retry later",
					cfg.CreateRate, cfg.CreateBurst)})
				return
			}
			f(w, r)
		})
	}
	route("POST /v1/sessions", "create_session", h.create)
	route("PUT /v1/sessions/{name...}", "update_session", h.update)
	route("GET /v1/sessions/{name...}", "get_session", h.get)
	route("DELETE /v1/sessions/{name...}", "delete_session", h.deleteSession)
	route("GET /v1/sessions", "list_sessions", h.list)
	route("GET /v1/public/{path...}", "get_public", h.public)
	route("GET /v1/ca", "get_ca", h.ca)
	route("GET "+evidence.Path, "get_attestation", h.attestation)
	route("PUT /v1/meshes/{name}", "put_mesh", h.putMesh)
	route("DELETE /v1/meshes/{name}", "delete_mesh", h.deleteMesh)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type operationKey struct{}

func withOperation(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, operationKey{}, op)
}

func operationOf(r *http.Request) string {
	if op, ok := r.Context().Value(operationKey{}).(string); ok {
		return op
	}
	return "unknown"
}

// rateKey is whom a request counts against: its client identity, or, without one, its source
// address.
func rateKey(r *http.Request) string {
	if c := client(r); c.ID != "" {
		return "client:" + c.ID
	}
	return "addr:" + remoteHost(r)
}

// remoteHost is the address a request came from (the connection's, never a header's).
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func client(r *http.Request) cas.Client {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return cas.Client{}
	}
	return cas.ClientFromCert(r.TLS.PeerCertificates[0])
}

func readDoc(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxDocumentSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &cas.Error{Code: cas.CodeLimit, Limit: cas.LimitDocumentSize, Msg: fmt.Sprintf("document larger than %d bytes", MaxDocumentSize)}
		}
		return nil, &cas.Error{Code: cas.CodeInvalid, Msg: "reading the request body: " + err.Error()}
	}
	if len(body) == 0 {
		return nil, &cas.Error{Code: cas.CodeInvalid, Msg: "empty request body: send the session YAML"}
	}
	return body, nil
}

func (h *Handler) ok(r *http.Request) {
	h.requests.WithLabelValues(operationOf(r), "ok").Inc()
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	doc, err := readDoc(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	info, err := h.cas.Create(r.Context(), doc, client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	writeJSON(w, http.StatusCreated, sessionResponse(info, false))
}

func (h *Handler) update(w http.ResponseWriter, r *http.Request) {
	doc, err := readDoc(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// The path must name the session the document names, so that logs and proxies that
	// route by path are not misled.
	if s, err := session.Parse(doc); err == nil && s.Name != r.PathValue("name") {
		h.fail(w, r, &cas.Error{Code: cas.CodeInvalid, Msg: fmt.Sprintf("the path names session %q but the document names %q", r.PathValue("name"), s.Name)})
		return
	}
	info, err := h.cas.Update(r.Context(), doc, client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	writeJSON(w, http.StatusOK, sessionResponse(info, false))
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	info, err := h.cas.Get(r.Context(), r.PathValue("name"), client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	writeJSON(w, http.StatusOK, sessionResponse(info, true))
}

func (h *Handler) deleteSession(w http.ResponseWriter, r *http.Request) {
	if err := h.cas.Delete(r.Context(), r.PathValue("name"), client(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	infos, err := h.cas.List(r.Context(), client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	out := make([]mgmtapi.SessionResponse, 0, len(infos))
	for _, i := range infos {
		out = append(out, sessionResponse(i, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) public(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	i := strings.LastIndexByte(path, '/')
	if i <= 0 || i == len(path)-1 {
		h.fail(w, r, &cas.Error{Code: cas.CodeNotFound, Msg: fmt.Sprintf("want /v1/public/SESSION/SECRET, got /v1/public/%s", path)})
		return
	}
	pem, err := h.cas.PublicValue(r.Context(), path[:i], path[i+1:])
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pem) //nolint:gosec // a PEM certificate from the store, served as application/x-pem-file with nosniff
}

func (h *Handler) putMesh(w http.ResponseWriter, r *http.Request) {
	doc, err := readDoc(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	var validate func(context.Context) error
	if h.cfg.ValidateMesh != nil {
		validate = func(ctx context.Context) error { return h.cfg.ValidateMesh(ctx, name, doc, client(r)) }
	}
	if err := h.cas.PutMesh(r.Context(), name, doc, client(r), validate); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) deleteMesh(w http.ResponseWriter, r *http.Request) {
	if err := h.cas.DeleteMesh(r.Context(), r.PathValue("name"), client(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	w.WriteHeader(http.StatusNoContent)
}

// attestation serves the control plane's evidence for the caller's nonce.
func (h *Handler) attestation(w http.ResponseWriter, r *http.Request) {
	values := r.URL.Query()["nonce"]
	if len(values) != 1 {
		h.fail(w, r, &cas.Error{Code: cas.CodeInvalid, Msg: fmt.Sprintf(
			"want one nonce: %s?nonce=<64 hex digits>, 32 fresh random bytes of the caller's (got %d)", evidence.Path, len(values))})
		return
	}
	var nonce [32]byte
	if len(values[0]) != hex.EncodedLen(len(nonce)) {
		h.fail(w, r, &cas.Error{Code: cas.CodeInvalid, Msg: fmt.Sprintf(
			"nonce: want 64 hex digits (32 bytes), got %d characters", len(values[0]))})
		return
	}
	if _, err := hex.Decode(nonce[:], []byte(values[0])); err != nil {
		h.fail(w, r, &cas.Error{Code: cas.CodeInvalid, Msg: "nonce: want 64 hex digits (32 bytes): " + err.Error()})
		return
	}
	if h.cfg.Evidence == nil {
		h.fail(w, r, &cas.Error{Code: cas.CodeNotFound, Msg: "this control plane serves no attestation evidence: " +
			"it runs neither in an SGX enclave under Gramine (/dev/attestation) nor with --simulation"})
		return
	}
	if !h.evidence.Allow(remoteHost(r)) || !h.quotes.Allow("") {
		w.Header().Set("Retry-After", "5")
		h.fail(w, r, &cas.Error{Code: cas.CodeLimit, Limit: cas.LimitRate, Msg: fmt.Sprintf(
			"too many attestation requests: each costs a quote; at most %g per second (bursts of %d) per address, "+
				"%d times that per network, %g per second for everyone; retry later",
			h.cfg.EvidenceRate, h.cfg.EvidenceBurst, ratelimit.PrefixFactor, h.cfg.EvidenceTotalRate)})
		return
	}
	body, err := h.cfg.Evidence(r.Context(), nonce)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(r)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

func (h *Handler) ca(w http.ResponseWriter, r *http.Request) {
	h.ok(r)
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(h.cfg.BundlePEM)
}

// statusOf is the one place that maps CAS errors to HTTP status codes.
func statusOf(err error) int {
	switch cas.CodeOf(err) {
	case cas.CodeInvalid:
		return http.StatusBadRequest
	case cas.CodeNotFound:
		return http.StatusNotFound
	case cas.CodeForbidden:
		return http.StatusForbidden
	case cas.CodeConflict:
		return http.StatusConflict
	case cas.CodeUnauthenticated:
		return http.StatusUnauthorized
	case cas.CodeLimit:
		switch cas.LimitOf(err) {
		case cas.LimitRate:
			return http.StatusTooManyRequests
		case cas.LimitSessionsPerClient, cas.LimitMeshesPerClient:
			return http.StatusForbidden
		default:
			return http.StatusRequestEntityTooLarge
		}
	default:
		return http.StatusInternalServerError
	}
}

// reasonOf is the metric label of a refusal (a closed set).
func reasonOf(err error) string {
	switch cas.CodeOf(err) {
	case cas.CodeInvalid:
		return "invalid"
	case cas.CodeNotFound:
		return "not_found"
	case cas.CodeForbidden:
		return "forbidden"
	case cas.CodeConflict:
		return "conflict"
	case cas.CodeUnauthenticated:
		return "unauthenticated"
	case cas.CodeLimit:
		return "limit_" + string(cas.LimitOf(err))
	default:
		return "internal"
	}
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.requests.WithLabelValues(operationOf(r), reasonOf(err)).Inc()
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		h.log.ErrorContext(r.Context(), "management request failed", "method", r.Method, "path", r.URL.Path, "error", msg)
		msg = "internal error (see the control plane's log)"
	} else {
		h.log.InfoContext(r.Context(), "management request refused", "method", r.Method, "path", r.URL.Path, "status", code, "reason", msg)
	}
	writeJSON(w, code, mgmtapi.ErrorResponse{Error: msg})
}

// sessionResponse is the answer about a session, its document only when asked (GET).
func sessionResponse(i *cas.Info, withDoc bool) mgmtapi.SessionResponse {
	r := mgmtapi.SessionResponse{Name: i.Name, Hash: i.Hash, Created: i.Created, Updated: i.Updated, Changed: i.Changed}
	if withDoc {
		r.Session = string(i.Document)
	}
	return r
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
