package cas_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

const (
	redisName = "demo/redis"
	flaskName = "demo/flask"
)

var exampleVars = map[string]string{
	"REDIS_SESSION":    redisName,
	"FLASK_SESSION":    flaskName,
	"REDIS_MRENCLAVE":  strings.Repeat("a", 64),
	"PYTHON_MRENCLAVE": strings.Repeat("b", 64),
	"ATTESTATION_MODE": "simulation",
	"API_FSPF_PATH":    "/app",
	"API_FSPF_KEY":     strings.Repeat("c", 64),
	"API_FSPF_TAG":     strings.Repeat("d", 64),
}

func example(t *testing.T, file string, vars map[string]string) []byte {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", file))
	require.NoError(t, err)
	out, err := session.Expand(tmpl, vars)
	require.NoError(t, err)
	return out
}

// openStore opens a real encrypted bbolt store in dir.
func openStore(t *testing.T, dir string, key store.Key) store.Backend {
	t.Helper()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	e, err := store.Encrypted(context.Background(), b, key)
	require.NoError(t, err)
	return e
}

func client(t *testing.T) (cas.Client, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cas.ClientFromCert(cert), cert
}

type fixture struct {
	dir   string
	key   store.Key
	st    store.Backend
	cas   *cas.CAS
	owner cas.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	_, err := rand.Read(f.key[:])
	require.NoError(t, err)
	f.st = openStore(t, f.dir, f.key)
	t.Cleanup(func() { _ = f.st.Close() })
	f.cas = cas.New(cas.Config{Store: f.st, MeshSessions: meshSessions})
	f.owner, _ = client(t)
	f.namespace(t, "demo", f.owner)
	return f
}

// namespace creates a namespace session (one that only names who may create sessions in it).
func (f *fixture) namespace(t *testing.T, name string, owner cas.Client, createSessions ...string) {
	t.Helper()
	doc := "name: " + name + "\nversion: \"0.3\"\n"
	if len(createSessions) > 0 {
		doc += "access_policy:\n  create_sessions: [" + strings.Join(createSessions, ", ") + "]\n"
	}
	_, err := f.cas.Create(context.Background(), []byte(doc), owner)
	require.NoError(t, err)
}

// meshSessions reads a test mesh document: one session name per line.
func meshSessions(doc []byte) ([]string, error) {
	return strings.Fields(string(doc)), nil
}

func (f *fixture) createExample(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	_, err := f.cas.Create(ctx, example(t, "redis-session.yaml", exampleVars), f.owner)
	require.NoError(t, err)
	_, err = f.cas.Create(ctx, example(t, "flask-session.yaml", exampleVars), f.owner)
	require.NoError(t, err)
}

func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func opensslVerify(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	out, err := exec.CommandContext(t.Context(), "openssl", append([]string{"verify"}, args...)...).CombinedOutput()
	require.NoError(t, err, "openssl verify %v: %s", args, out)
	return string(out)
}

func TestSeedSessionsRenderVerifiableFiles(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := context.Background()

	s, vals, err := f.cas.Lookup(ctx, flaskName)
	require.NoError(t, err)
	rs, err := s.RenderService("flask_restapi", vals)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"/tls/flask.crt", "/tls/flask.key", "/tls/redis-ca.crt", "/tls/client.crt", "/tls/client.key"}, keys(rs.Files))

	dir := t.TempDir()
	pub, err := f.cas.PublicValue(ctx, flaskName, "api_ca_cert")
	require.NoError(t, err)
	apiCA := writePEM(t, dir, "api_ca.pem", pub)
	flaskCrt := writePEM(t, dir, "flask.crt", rs.Files["/tls/flask.crt"])
	out := opensslVerify(t, "-CAfile", apiCA, "-verify_hostname", "api", "-purpose", "sslserver", flaskCrt)
	assert.Contains(t, out, "flask.crt: OK")

	redisCA := writePEM(t, dir, "redis-ca.crt", rs.Files["/tls/redis-ca.crt"])
	clientCrt := writePEM(t, dir, "client.crt", rs.Files["/tls/client.crt"])
	out = opensslVerify(t, "-CAfile", redisCA, "-purpose", "sslclient", clientCrt)
	assert.Contains(t, out, "client.crt: OK")

	// The injected client key belongs to the client certificate.
	assertKeyMatchesCert(t, rs.Files["/tls/client.key"], rs.Files["/tls/client.crt"])
	assertKeyMatchesCert(t, rs.Files["/tls/flask.key"], rs.Files["/tls/flask.crt"])

	// The Redis side: its server certificate carries DNS "redis" under the same CA the
	// Flask side trusts.
	rsess, rvals, err := f.cas.Lookup(ctx, redisName)
	require.NoError(t, err)
	rr, err := rsess.RenderService("redis", rvals)
	require.NoError(t, err)
	redisCrt := writePEM(t, dir, "redis.crt", rr.Files["/tls/redis.crt"])
	out = opensslVerify(t, "-CAfile", redisCA, "-verify_hostname", "redis", "-purpose", "sslserver", redisCrt)
	assert.Contains(t, out, "redis.crt: OK")
	assert.Equal(t, []string{"/usr/bin/redis-server", "--port", "0", "--tls-port", "6379", "--bind", "127.0.0.1",
		"--tls-cert-file", "/tls/redis.crt", "--tls-key-file", "/tls/redis.key", "--tls-ca-cert-file", "/tls/redis-ca.crt",
		"--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"}, rr.Argv)
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func assertKeyMatchesCert(t *testing.T, keyPEM, certPEM []byte) {
	t.Helper()
	key, err := ca.ParseKeyPEM(keyPEM)
	require.NoError(t, err)
	certs, err := ca.ParseCertsPEM(certPEM)
	require.NoError(t, err)
	require.Len(t, certs, 1)
	want, err := x509.MarshalPKIXPublicKey(certs[0].PublicKey)
	require.NoError(t, err)
	got, err := x509.MarshalPKIXPublicKey(key.Public())
	require.NoError(t, err)
	assert.Equal(t, want, got, "injected key does not belong to the certificate")
}

func TestPublicValuesOnlyForExportPublic(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := context.Background()
	for _, secret := range []string{"api_ca_key", "flask_key", "flask", "redis_client_key", "nope"} {
		_, err := f.cas.PublicValue(ctx, flaskName, secret)
		require.Error(t, err, secret)
		assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err), secret)
		assert.Contains(t, err.Error(), "only secrets with export_public: true are readable", secret)
	}
	pub, err := f.cas.PublicValue(ctx, flaskName, "api_ca_cert")
	require.NoError(t, err)
	assert.NotContains(t, string(pub), "PRIVATE KEY")
}

func TestCreateRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, _ := client(t)

	// The Flask session imports from a Redis session that does not exist yet.
	_, err := f.cas.Create(ctx, example(t, "flask-session.yaml", exampleVars), f.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeInvalid, cas.CodeOf(err))
	assert.Contains(t, err.Error(), redisName)

	// A Redis session that exports to someone else: the Flask import is not exported to it.
	vars := map[string]string{}
	for k, v := range exampleVars {
		vars[k] = v
	}
	vars["FLASK_SESSION"] = "someone/else"
	_, err = f.cas.Create(ctx, example(t, "redis-session.yaml", vars), f.owner)
	require.NoError(t, err)
	_, err = f.cas.Create(ctx, example(t, "flask-session.yaml", exampleVars), f.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeInvalid, cas.CodeOf(err))
	assert.Contains(t, err.Error(), "not exported to")

	// Creating twice is a conflict.
	_, err = f.cas.Create(ctx, example(t, "redis-session.yaml", vars), f.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err))
	assert.Contains(t, err.Error(), "already exists")

	// Another client may not create sessions in this owner's namespace.
	_, err = f.cas.Create(ctx, example(t, "redis-session.yaml", vars), other)
	require.Error(t, err)
	assert.Equal(t, cas.CodeForbidden, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `its namespace session "demo" does not exist or does not let this client create sessions in it`)

	// Create with a predecessor is refused.
	doc := append([]byte("predecessor: "+strings.Repeat("0", 64)+"\n"), example(t, "redis-session.yaml", map[string]string{
		"REDIS_SESSION": "p/redis", "FLASK_SESSION": flaskName, "REDIS_MRENCLAVE": strings.Repeat("a", 64), "ATTESTATION_MODE": "simulation",
	})...)
	_, err = f.cas.Create(ctx, doc, f.owner)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "predecessor")
	assert.Contains(t, err.Error(), "forbidden when creating")

	// Without a client certificate nothing is created.
	_, err = f.cas.Create(ctx, example(t, "redis-session.yaml", exampleVars), cas.Client{})
	assert.Equal(t, cas.CodeUnauthenticated, cas.CodeOf(err))
}

func withPredecessor(doc []byte, hash string) []byte {
	return append([]byte("predecessor: "+hash+"\n"), doc...)
}

func TestUpdateKeepsKeysReissuesCertificates(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := context.Background()
	_, before, err := f.cas.Lookup(ctx, redisName)
	require.NoError(t, err)

	cur, err := f.cas.Get(ctx, redisName, f.owner)
	require.NoError(t, err)
	doc := example(t, "redis-session.yaml", exampleVars)

	// Without a predecessor, with a stale one, and by another client: refused.
	_, err = f.cas.Update(ctx, doc, f.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err))
	assert.Contains(t, err.Error(), "predecessor: required to update session")

	_, err = f.cas.Update(ctx, withPredecessor(doc, strings.Repeat("1", 64)), f.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err))
	assert.Contains(t, err.Error(), "predecessor is stale: got "+strings.Repeat("1", 64)+", current is "+cur.Hash)

	// Another client may neither update nor read it, and is told no more than
	// "not found or not permitted".
	other, _ := client(t)
	_, err = f.cas.Update(ctx, withPredecessor(doc, cur.Hash), other)
	require.Error(t, err)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err))
	require.EqualError(t, err, `cas: session "demo/redis" not found or not permitted`)

	_, err = f.cas.Get(ctx, redisName, other)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err))
	_, err = f.cas.Get(ctx, "demo/nothing", other)
	require.EqualError(t, err, `cas: session "demo/nothing" not found or not permitted`, "missing and unreadable read the same")

	info, err := f.cas.Update(ctx, withPredecessor(doc, cur.Hash), f.owner)
	require.NoError(t, err)
	assert.NotEqual(t, cur.Hash, info.Hash)
	assert.ElementsMatch(t, []string{"redis", "redis_client_cert", "redis_ca_cert"}, info.Changed, "only certificates are re-issued")

	_, after, err := f.cas.Lookup(ctx, redisName)
	require.NoError(t, err)
	for _, name := range []string{"redis_key", "redis_client_key", "redis_ca_key"} {
		b, _ := before.Lookup(name)
		a, _ := after.Lookup(name)
		assert.Equal(t, b.KeyPEM, a.KeyPEM, "%s must be kept", name)
	}
	for _, name := range []string{"redis", "redis_client_cert", "redis_ca_cert"} {
		b, _ := before.Lookup(name)
		a, _ := after.Lookup(name)
		assert.NotEqual(t, b.CertPEM, a.CertPEM, "%s must be re-issued", name)
		assert.Equal(t, b.KeyPEM, a.KeyPEM, "%s must keep its key", name)
	}

	// The second update with the now stale first hash is refused.
	_, err = f.cas.Update(ctx, withPredecessor(doc, cur.Hash), f.owner)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "predecessor is stale")
}

func TestStoreHoldsNoPlaintextKeysAndSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := context.Background()
	_, vals, err := f.cas.Lookup(ctx, flaskName)
	require.NoError(t, err)
	_, rvals, err := f.cas.Lookup(ctx, redisName)
	require.NoError(t, err)
	require.NoError(t, f.st.Close())

	files, err := filepath.Glob(filepath.Join(f.dir, "*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var all []byte
	for _, p := range files {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		all = append(all, b...)
	}
	for _, set := range []session.Values{vals, rvals} {
		for _, name := range []string{"api_ca_key", "flask_key", "redis_key", "redis_client_key", "redis_ca_key"} {
			v, ok := set.Lookup(name)
			if !ok {
				continue
			}
			block, _ := pem.Decode(v.KeyPEM)
			require.NotNil(t, block, name)
			body := strings.Split(strings.TrimSpace(string(v.KeyPEM)), "\n")
			for _, line := range body[1 : len(body)-1] {
				assert.False(t, bytes.Contains(all, []byte(line)), "store holds a line of %s in plaintext", name)
			}
			assert.False(t, bytes.Contains(all, block.Bytes), "store holds the DER of %s", name)
		}
	}

	// Restart: the same key opens the same sessions and secrets.
	st := openStore(t, f.dir, f.key)
	defer st.Close()
	c2 := cas.New(cas.Config{Store: st})
	_, vals2, err := c2.Lookup(ctx, flaskName)
	require.NoError(t, err)
	for _, name := range []string{"api_ca_cert", "flask", "redis_client_cert", "redis_ca_cert"} {
		a, _ := vals.Lookup(name)
		b, _ := vals2.Lookup(name)
		assert.Equal(t, a.CertPEM, b.CertPEM, name)
		assert.Equal(t, a.KeyPEM, b.KeyPEM, name)
	}
}

func TestListHonoursReadPolicy(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := context.Background()
	list, err := f.cas.List(ctx, f.owner)
	require.NoError(t, err)
	require.Len(t, list, 3, "demo, demo/redis, demo/flask")
	other, _ := client(t)
	list, err = f.cas.List(ctx, other)
	require.NoError(t, err)
	assert.Empty(t, list)
	n, err := f.cas.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}

func TestAccessPolicyCertificateAndAny(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	reader, readerCert := client(t)
	certPEM := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: readerCert.Raw})), "\n", "\n      ")
	doc := "name: acl\nversion: \"0.3\"\naccess_policy:\n  read:\n    - |\n      " + strings.TrimSpace(certPEM) + "\n  update: [NONE]\n" +
		"secrets:\n  - name: s\n    kind: ascii\n"
	_, err := f.cas.Create(ctx, []byte(doc), f.owner)
	require.NoError(t, err)

	_, err = f.cas.Get(ctx, "acl", reader)
	require.NoError(t, err, "the certificate in the read policy may read")
	_, err = f.cas.Get(ctx, "acl", f.owner)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err), "the creator is not in the read policy")

	cur, err := f.cas.Get(ctx, "acl", reader)
	require.NoError(t, err)
	_, err = f.cas.Update(ctx, withPredecessor([]byte(doc), cur.Hash), reader)
	require.Error(t, err)
	assert.Equal(t, cas.CodeForbidden, cas.CodeOf(err), "a reader who may not update is told why")
	assert.Contains(t, err.Error(), "the access policy is NONE")
}
