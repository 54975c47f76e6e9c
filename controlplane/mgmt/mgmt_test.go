package mgmt_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
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
	dir := t.TempDir()
	bolt, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	var key store.Key
	_, err = rand.Read(key[:])
	require.NoError(t, err)
	st, err := store.Encrypted(context.Background(), bolt, key)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })

	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("test.local")})
	require.NoError(t, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srvCert, err := auth.IssueServerCert(srvKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(t, err)

	srv := httptest.NewUnstartedServer(mgmt.NewHandler(cas.New(cas.Config{Store: st}), auth.BundlePEM(), nil))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	e := &env{url: srv.URL, roots: x509.NewCertPool()}
	e.roots.AddCert(auth.Bundle()[0])
	mk := func(withID bool) *mgmt.Client {
		cfg := mgmt.ClientConfig{URL: srv.URL, Roots: e.roots}
		if withID {
			id, err := mgmt.LoadOrCreateIdentity(t.TempDir())
			require.NoError(t, err)
			cfg.Identity = id
		}
		c, err := mgmt.NewClient(cfg)
		require.NoError(t, err)
		return c
	}
	e.owner, e.other, e.anon = mk(true), mk(true), mk(false)
	return e
}

func exampleDoc(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", file))
	require.NoError(t, err)
	doc, err := session.Expand(raw, map[string]string{
		"REDIS_SESSION": "ns/redis", "FLASK_SESSION": "ns/flask", "ATTESTATION_MODE": "simulation",
		"REDIS_MRENCLAVE": strings.Repeat("a", 64), "PYTHON_MRENCLAVE": strings.Repeat("b", 64),
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
