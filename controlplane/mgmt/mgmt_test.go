package mgmt_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/ratelimit"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

type env struct {
	srv   *mgmttest.Server
	url   string
	roots *x509.CertPool
	owner *mgmtapi.Client
	other *mgmtapi.Client
	anon  *mgmtapi.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := mgmttest.Start(t)
	e := &env{srv: srv, url: srv.URL, roots: srv.Roots, owner: srv.Client(t, true), other: srv.Client(t, true), anon: srv.Client(t, false)}
	_, err := e.owner.Create(t.Context(), []byte("name: ns\nversion: \"0.3\"\n"))
	require.NoError(t, err, "the owner's namespace")
	return e
}

func exampleDoc(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", file))
	require.NoError(t, err)
	doc, err := session.Expand(raw, map[string]string{
		"REDIS_SESSION": "ns/redis", "FLASK_SESSION": "ns/flask", "ATTESTATION_MODE": "simulation",
		"REDIS_MRENCLAVE": strings.Repeat("a", 64), "PYTHON_MRENCLAVE": strings.Repeat("b", 64),
		"API_FSPF_PATH": "/app", "API_FSPF_KEY": strings.Repeat("c", 64), "API_FSPF_TAG": strings.Repeat("d", 64),
	})
	require.NoError(t, err)
	return doc
}

func requireAPIError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	require.Error(t, err)
	var ae *mgmtapi.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, status, ae.Status, ae.Msg)
	assert.Contains(t, ae.Msg, msg)
}

func TestManagementAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	_, err := e.anon.Create(ctx, exampleDoc(t, "redis-session.yaml"))
	requireAPIError(t, err, http.StatusUnauthorized, "needs a client certificate")

	created, err := e.owner.Create(ctx, exampleDoc(t, "redis-session.yaml"))
	require.NoError(t, err)
	assert.Equal(t, "ns/redis", created.Name)
	assert.Len(t, created.Hash, 64)
	assert.Contains(t, created.Changed, "redis_ca_cert")

	_, err = e.owner.Create(ctx, exampleDoc(t, "redis-session.yaml"))
	requireAPIError(t, err, http.StatusConflict, "already exists")

	_, err = e.owner.Create(ctx, []byte("name: x\nversion: \"0.3\"\nbogus: 1\n"))
	requireAPIError(t, err, http.StatusBadRequest, "bogus")

	_, err = e.owner.Create(ctx, exampleDoc(t, "flask-session.yaml"))
	require.NoError(t, err)

	got, err := e.owner.Get(ctx, "ns/flask")
	require.NoError(t, err)
	assert.Contains(t, got.Session, "api_ca_cert")
	_, err = e.other.Get(ctx, "ns/flask")
	requireAPIError(t, err, http.StatusNotFound, `session "ns/flask" not found or not permitted`)
	_, err = e.owner.Get(ctx, "ns/nope")
	requireAPIError(t, err, http.StatusNotFound, `session "ns/nope" not found or not permitted`)

	list, err := e.owner.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 3)
	list, err = e.other.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)

	// Public values: no client certificate needed, only export_public secrets.
	pub, err := e.anon.Public(ctx, "ns/flask", "api_ca_cert")
	require.NoError(t, err)
	certs, err := ca.ParseCertsPEM(pub)
	require.NoError(t, err)
	assert.True(t, certs[0].IsCA)
	for _, secret := range []string{"api_ca_key", "flask_key", "flask"} {
		_, err = e.anon.Public(ctx, "ns/flask", secret)
		requireAPIError(t, err, http.StatusNotFound, "only secrets with export_public")
	}

	// Update: predecessor required; path must match the document; another client refused.
	doc := exampleDoc(t, "redis-session.yaml")
	_, err = e.owner.Update(ctx, "ns/redis", doc)
	requireAPIError(t, err, http.StatusConflict, "predecessor: required")
	upd := append([]byte("predecessor: "+created.Hash+"\n"), doc...)
	_, err = e.owner.Update(ctx, "ns/flask", upd)
	requireAPIError(t, err, http.StatusBadRequest, `the path names session "ns/flask" but the document names "ns/redis"`)
	_, err = e.other.Update(ctx, "ns/redis", upd)
	requireAPIError(t, err, http.StatusNotFound, "not found or not permitted")
	updated, err := e.owner.Update(ctx, "ns/redis", upd)
	require.NoError(t, err)
	assert.NotEqual(t, created.Hash, updated.Hash)
	_, err = e.owner.Update(ctx, "ns/redis", upd)
	requireAPIError(t, err, http.StatusConflict, "predecessor is stale")
}

func TestCAEndpointAndIdentityReuse(t *testing.T) {
	e := newEnv(t)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, e.url+"/v1/ca", nil)
	require.NoError(t, err)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	dir := t.TempDir()
	a, err := mgmtapi.LoadOrCreateIdentity(dir)
	require.NoError(t, err)
	b, err := mgmtapi.LoadOrCreateIdentity(dir)
	require.NoError(t, err)
	assert.Equal(t, a.Certificate[0], b.Certificate[0], "the identity is created once and then reused")
	st, err := os.Stat(filepath.Join(dir, "client.key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}

func TestRefusalsAreCounted(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, err := e.other.Get(ctx, "ns")
	requireAPIError(t, err, http.StatusNotFound, "not found or not permitted")
	_, err = e.other.Create(ctx, []byte("name: ns/x\nversion: \"0.3\"\n"))
	requireAPIError(t, err, http.StatusForbidden, `namespace session "ns"`)
	_, err = e.owner.Create(ctx, []byte(strings.Repeat("#", mgmt.MaxDocumentSize+1)))
	requireAPIError(t, err, http.StatusRequestEntityTooLarge, "document larger than 1048576 bytes")

	got := counts(t, e.srv.Metrics)
	assert.InDelta(t, 1, got["get_session/not_found"], 0)
	assert.InDelta(t, 1, got["create_session/forbidden"], 0)
	assert.InDelta(t, 1, got["create_session/limit_document_size"], 0)
	assert.InDelta(t, 1, got["create_session/ok"], 0, "the namespace")
}

// An anonymous flood is answered 429 after its burst, counted, and leaves the clients with an
// identity (and other addresses) their own budget.
func TestRateLimitPerClient(t *testing.T) {
	// A rate that refills nothing while the test runs, however slow the machine: the burst
	// alone decides, so the count is exact.
	srv := mgmttest.StartWith(t, func(c *mgmt.Config) { c.ClientRate = 0.001 })
	e := &env{srv: srv, owner: srv.Client(t, true), anon: srv.Client(t, false)}
	ctx := t.Context()
	_, err := e.owner.Create(ctx, []byte("name: ns\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	limited := 0
	for range mgmt.DefaultClientBurst + 20 {
		_, err := e.anon.Public(ctx, "ns", "nothing")
		var ae *mgmtapi.APIError
		require.ErrorAs(t, err, &ae)
		if ae.Status == http.StatusTooManyRequests {
			limited++
			assert.Contains(t, ae.Msg, "too many requests from this client")
		}
	}
	assert.Equal(t, 20, limited, "the flood was limited after the burst")
	_, err = e.owner.Get(ctx, "ns")
	require.NoError(t, err, "a client with its own identity keeps its budget")
	assert.Positive(t, counts(t, e.srv.Metrics)["get_public/limit_rate"])
}

// The security review's bypass: a fresh self-made client certificate per request is a fresh
// identity, but every request also counts against its source network, and so does every
// session created.
func TestThrowawayIdentitiesShareTheirNetworksLimits(t *testing.T) {
	srv := mgmttest.StartWith(t, func(c *mgmt.Config) { c.ClientRate, c.ClientBurst = 0.01, 5 })
	ctx := t.Context()
	allowed, limited := 0, 0
	for range 3 * ratelimit.PrefixFactor * 5 {
		_, err := srv.Client(t, true).List(ctx)
		var ae *mgmtapi.APIError
		switch {
		case err == nil:
			allowed++
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			limited++
			assert.Contains(t, ae.Msg, "too many requests from this client or its network")
		default:
			require.NoError(t, err)
		}
	}
	assert.Equal(t, ratelimit.PrefixFactor*5, allowed, "one network gets PrefixFactor clients' burst, however many identities it makes")
	assert.Equal(t, 2*ratelimit.PrefixFactor*5, limited)

	srv = mgmttest.StartWith(t, func(c *mgmt.Config) { c.CreateRate, c.CreateBurst = 0.001, 3 })
	for i := range 5 {
		_, err := srv.Client(t, true).Create(ctx, fmt.Appendf(nil, "name: squat%d\nversion: \"0.3\"\n", i))
		if i < 3 {
			require.NoError(t, err)
			continue
		}
		requireAPIError(t, err, http.StatusTooManyRequests, "too many sessions and meshes created from this network")
	}
	assert.InDelta(t, 2, counts(t, srv.Metrics)["create_session/limit_rate"], 0)
}

func TestDeleteMesh(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, err := e.owner.Create(ctx, exampleDoc(t, "redis-session.yaml"))
	require.NoError(t, err)
	reg := []byte(`{"mesh": "name: ns\nsessions: [s.yaml]\nservices:\n  - {name: redis, config_id: ns/redis/redis, binary: /bin/true, ports: [{port: 6379}]}\n",` +
		`"endpoints": {"redis": "10.0.0.2"}}`)
	require.NoError(t, e.owner.PutMesh(ctx, "ns", reg))
	err = e.other.PutMesh(ctx, "ns", reg)
	requireAPIError(t, err, http.StatusForbidden, `cannot register mesh "ns": a mesh is named after a session its registrant controls`)
	err = e.other.DeleteMesh(ctx, "ns")
	requireAPIError(t, err, http.StatusNotFound, `mesh "ns" is not registered, or this client may not delete it`)
	require.NoError(t, e.owner.DeleteMesh(ctx, "ns"))
	err = e.owner.DeleteMesh(ctx, "ns")
	requireAPIError(t, err, http.StatusNotFound, `mesh "ns" is not registered, or this client may not delete it`)
	ms, err := e.srv.CAS.Meshes(ctx)
	require.NoError(t, err)
	assert.Empty(t, ms)
}

// counts returns attestmesh_management_requests_total by "operation/result".
func counts(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "attestmesh_management_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["operation"]+"/"+labels["result"]] += m.GetCounter().GetValue()
		}
	}
	return out
}
