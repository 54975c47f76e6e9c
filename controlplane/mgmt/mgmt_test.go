package mgmt_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

type env struct {
	url   string
	roots *x509.CertPool
	owner *mgmt.Client
	other *mgmt.Client
	anon  *mgmt.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := mgmttest.Start(t)
	return &env{url: srv.URL, roots: srv.Roots, owner: srv.Client(t, true), other: srv.Client(t, true), anon: srv.Client(t, false)}
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
	var ae *mgmt.APIError
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
	requireAPIError(t, err, http.StatusForbidden, "access policy")
	_, err = e.owner.Get(ctx, "ns/nope")
	requireAPIError(t, err, http.StatusNotFound, `session "ns/nope" does not exist`)

	list, err := e.owner.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 2)
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
	requireAPIError(t, err, http.StatusForbidden, "not in the access policy")
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
	a, err := mgmt.LoadOrCreateIdentity(dir)
	require.NoError(t, err)
	b, err := mgmt.LoadOrCreateIdentity(dir)
	require.NoError(t, err)
	assert.Equal(t, a.Certificate[0], b.Certificate[0], "the identity is created once and then reused")
	st, err := os.Stat(filepath.Join(dir, "client.key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}
