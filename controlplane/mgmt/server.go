// Package mgmt is the control plane's management API (HTTPS, default port 8081): create,
// update, read and list sessions, authenticated by TLS client certificate and authorized by
// each session's access_policy; and, without authentication, the control plane's CA bundle and
// the public values of secrets marked export_public.
//
//	POST /v1/sessions                    create (body: the session YAML)        201
//	PUT  /v1/sessions/{name}             update (body: YAML with predecessor)  200
//	GET  /v1/sessions/{name}             read (JSON: name, hash, document)     200
//	GET  /v1/sessions                    list the sessions the client may read 200
//	GET  /v1/public/{session}/{secret}   public certificate (PEM), no auth     200
//	GET  /v1/ca                          the control plane's CA bundle (PEM)   200
//	PUT  /v1/meshes/{name}               register a mesh (JSON, see mesh.Registration) 204
//
// Session names may contain '/'. Every refusal is a 4xx with a JSON body {"error": "..."} that
// says why; internal failures are a 500 that names no internal state.
package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// MaxDocumentSize bounds an uploaded session document.
const MaxDocumentSize = 1 << 20

// Handler serves the management API.
type Handler struct {
	// ValidateMesh checks a mesh registration from client before it is stored; nil accepts
	// any. A CAS error it returns (e.g. CodeForbidden) keeps its code.
	ValidateMesh func(ctx context.Context, name string, doc []byte, client cas.Client) error

	cas    *cas.CAS
	bundle []byte
	log    *slog.Logger
	mux    *http.ServeMux
}

// NewHandler returns the management API over c; bundlePEM is served at /v1/ca.
func NewHandler(c *cas.CAS, bundlePEM []byte, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cas: c, bundle: bundlePEM, log: log.With("subsystem", "mgmt"), mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /v1/sessions", h.create)
	h.mux.HandleFunc("PUT /v1/sessions/{name...}", h.update)
	h.mux.HandleFunc("GET /v1/sessions/{name...}", h.get)
	h.mux.HandleFunc("GET /v1/sessions", h.list)
	h.mux.HandleFunc("GET /v1/public/{path...}", h.public)
	h.mux.HandleFunc("GET /v1/ca", h.ca)
	h.mux.HandleFunc("PUT /v1/meshes/{name}", h.putMesh)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// SessionResponse is the JSON answer for session operations.
type SessionResponse struct {
	cas.Info
	Session string `json:"session,omitempty"`
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
			return nil, &cas.Error{Code: cas.CodeInvalid, Msg: fmt.Sprintf("session document larger than %d bytes", MaxDocumentSize)}
		}
		return nil, &cas.Error{Code: cas.CodeInvalid, Msg: "reading the request body: " + err.Error()}
	}
	if len(body) == 0 {
		return nil, &cas.Error{Code: cas.CodeInvalid, Msg: "empty request body: send the session YAML"}
	}
	return body, nil
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
	writeJSON(w, http.StatusCreated, SessionResponse{Info: *info})
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
	writeJSON(w, http.StatusOK, SessionResponse{Info: *info})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	info, err := h.cas.Get(r.Context(), r.PathValue("name"), client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SessionResponse{Info: *info, Session: string(info.Document)})
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	infos, err := h.cas.List(r.Context(), client(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, infos)
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
	if h.ValidateMesh != nil {
		if err := h.ValidateMesh(r.Context(), name, doc, client(r)); err != nil {
			if cas.CodeOf(err) != 0 {
				h.fail(w, r, err)
				return
			}
			h.fail(w, r, &cas.Error{Code: cas.CodeInvalid, Msg: "invalid mesh registration", Err: err})
			return
		}
	}
	if err := h.cas.PutMesh(r.Context(), name, doc, client(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) ca(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(h.bundle)
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
	default:
		return http.StatusInternalServerError
	}
}

// ErrorResponse is the JSON body of every refusal.
type ErrorResponse struct {
	Error string `json:"error"`
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		h.log.ErrorContext(r.Context(), "management request failed", "method", r.Method, "path", r.URL.Path, "error", msg)
		msg = "internal error (see the control plane's log)"
	} else {
		h.log.InfoContext(r.Context(), "management request refused", "method", r.Method, "path", r.URL.Path, "status", code, "reason", msg)
	}
	writeJSON(w, code, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
