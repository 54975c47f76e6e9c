// Package mgmtapi is the management API's contract: its JSON types and its client. The control
// plane serves the API (controlplane/mgmt); the CLI, `attestmesh apply` and `attestmesh up`
// call it through Client. It imports nothing of the control plane.
//
//	POST   /v1/sessions                  create (body: the session YAML)        201 SessionResponse
//	PUT    /v1/sessions/{name}           update (body: YAML with predecessor)  200 SessionResponse
//	GET    /v1/sessions/{name}           read                                  200 SessionResponse with the document
//	GET    /v1/sessions                  the sessions the client may read      200 []SessionResponse
//	GET    /v1/public/{session}/{secret} an export_public certificate (PEM), no client certificate
//	GET    /v1/ca                        the control plane's CA bundle (PEM), unauthenticated: pin it only after attesting
//	GET    /v1/attestation?nonce=HEX     the control plane's evidence, which binds its CA (see controlplane/evidence)
//	PUT    /v1/meshes/{name}             register a mesh (body: Registration)  204
//	DELETE /v1/meshes/{name}             remove a mesh registration            204
//
// A client is known by the public key of its TLS client certificate. Every refusal is a 4xx with
// an ErrorResponse body that says why.
package mgmtapi

import (
	"encoding/json"
	"time"
)

// SessionResponse is the answer about a session.
type SessionResponse struct {
	Name    string    `json:"name"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Changed lists, for a create or update, the secrets generated or re-issued (names only).
	Changed []string `json:"changed,omitempty"`
	// Session is the document exactly as stored (GET of one session only).
	Session string `json:"session,omitempty"`
}

// ErrorResponse is the body of every refusal.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Registration is what a deployment tells the control plane about a mesh so that it can
// configure the sidecars: the mesh file (variables already resolved into config IDs) and where
// each service's sidecars are reachable: an IP address per service, or, on Kubernetes, the
// ready pods that the control plane finds in its cluster.
type Registration struct {
	// Mesh is the mesh file.
	Mesh string `json:"mesh"`
	// Endpoints maps a service name to the IP address of its sidecar. Empty with Kubernetes.
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// Kubernetes says that the services run in the control plane's cluster (`attestmesh
	// apply`): each service's endpoints are the IPs of the ready, injected pods that carry its
	// config ID, followed as they come and go, and each sidecar binds its inbound listeners to
	// its own pod IP.
	Kubernetes bool `json:"kubernetes,omitempty"`
}

// Marshal encodes the registration as JSON.
func (r *Registration) Marshal() ([]byte, error) { return json.Marshal(r) }
