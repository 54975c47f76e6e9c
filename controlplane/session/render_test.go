package session_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

// issued is a certificate with its key, all PEM.
type issued struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	value session.Value
}

func newKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// issue creates a certificate signed by parent (self-signed when parent is nil).
func issue(t *testing.T, cn string, isCA bool, dns []string, parent *issued) *issued {
	t.Helper()
	key, keyPEM := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		DNSNames:              dns,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	signer, signerCert, chain := key, tmpl, []byte(nil)
	if parent != nil {
		signer, signerCert, chain = parent.key, parent.cert, parent.value.ChainPEM
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kind := session.KindX509
	if isCA {
		kind = session.KindX509CA
	}
	return &issued{cert: cert, key: key, value: session.Value{
		Kind: kind, KeyPEM: keyPEM, CertPEM: certPEM, ChainPEM: append(append([]byte{}, certPEM...), chain...),
	}}
}

func newCA(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	ca := issue(t, cn, true, nil, nil)
	return ca.value.CertPEM, ca.value.KeyPEM
}

// flaskValues are the flask session's secrets as the control plane would hold them, imports
// under their local names.
func flaskValues(t *testing.T) (session.ValueMap, map[string]*issued) {
	t.Helper()
	apiCA := issue(t, "api_ca_cert", true, nil, nil)
	redisRoot := issue(t, "redis_root", true, nil, nil)
	redisCA := issue(t, "redis_ca_cert", true, nil, redisRoot)
	flask := issue(t, "flask", false, []string{"api"}, apiCA)
	client := issue(t, "redis_client_cert", false, nil, redisCA)
	_, flaskKeyPEM := newKey(t)
	vals := session.ValueMap{
		"api_ca_cert":       apiCA.value,
		"api_ca_key":        {Kind: session.KindPrivateKey, KeyPEM: apiCA.value.KeyPEM},
		"flask":             flask.value,
		"flask_key":         {Kind: session.KindPrivateKey, KeyPEM: flaskKeyPEM},
		"redis_client_cert": client.value,
		"redis_client_key":  {Kind: session.KindPrivateKey, KeyPEM: client.value.KeyPEM},
		"redis_ca_cert":     redisCA.value,
	}
	return vals, map[string]*issued{"flask": flask, "client": client, "redis_ca": redisCA, "redis_root": redisRoot}
}

func TestRenderFlaskService(t *testing.T) {
	_, flask := examples(t)
	vals, certs := flaskValues(t)

	r, err := flask.RenderService("flask_restapi", vals)
	require.NoError(t, err)
	assert.Equal(t, flaskName, r.Session)
	assert.Equal(t, []string{"/usr/bin/python3", "/app/rest_api.py"}, r.Argv)
	assert.Equal(t, map[string]string{
		"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379", "API_HOST": "0.0.0.0", "API_PORT": "4996",
		"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
	}, r.Env)
	assert.Equal(t, []string{"API_HOST=0.0.0.0", "API_PORT=4996", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "REDIS_HOST=127.0.0.1", "REDIS_PORT=6379"}, r.Environ())
	assert.Equal(t, "/app", r.Pwd)
	assert.Equal(t, session.FSPF{Path: "/app", Key: strings.Repeat("c", 64), Tag: strings.Repeat("d", 64)}, r.FSPF)

	want := map[string][]byte{
		"/tls/flask.crt":    certs["flask"].value.CertPEM,
		"/tls/flask.key":    certs["flask"].value.KeyPEM,
		"/tls/redis-ca.crt": certs["redis_ca"].value.ChainPEM,
		"/tls/client.crt":   certs["client"].value.CertPEM,
		"/tls/client.key":   certs["client"].value.KeyPEM,
	}
	require.Equal(t, want, r.Files)

	// The rendered files are usable: the chain holds the CA then its root, and the flask
	// certificate verifies for DNS "api".
	rest := r.Files["/tls/redis-ca.crt"]
	var subjects []string
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		subjects = append(subjects, c.Subject.CommonName)
	}
	assert.Equal(t, []string{"redis_ca_cert", "redis_root"}, subjects)
	block, _ := pem.Decode(r.Files["/tls/flask.key"])
	require.NotNil(t, block)
	_, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
}

func TestRenderRedisService(t *testing.T) {
	redis, _ := examples(t)
	root := issue(t, "redis_ca_cert", true, nil, nil)
	srv := issue(t, "redis", false, []string{"redis"}, root)
	r, err := redis.RenderService("redis", session.ValueMap{"redis_ca_cert": root.value, "redis": srv.value})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"/usr/bin/redis-server", "--port", "0", "--tls-port", "6379", "--bind", "127.0.0.1",
		"--tls-cert-file", "/tls/redis.crt", "--tls-key-file", "/tls/redis.key",
		"--tls-ca-cert-file", "/tls/redis-ca.crt", "--tls-auth-clients", "yes",
		"--save", "", "--appendonly", "no",
	}, r.Argv)
	assert.Equal(t, srv.value.KeyPEM, r.Files["/tls/redis.key"])
	assert.Equal(t, root.value.CertPEM, r.Files["/tls/redis-ca.crt"])
}

func TestRenderFormats(t *testing.T) {
	ca := issue(t, "ca", true, nil, nil)
	vals := session.ValueMap{
		"pw":  {Kind: session.KindASCII, Bytes: []byte("hunter2")},
		"bin": {Kind: session.KindBinary, Bytes: []byte{0x00, 0xff, 0x10}},
		"key": {Kind: session.KindPrivateKey, KeyPEM: ca.value.KeyPEM},
		"ca":  ca.value,
	}
	tests := []struct {
		in   string
		want string
	}{
		{in: "x=$$SCONE::pw$$;", want: "x=hunter2;"},
		{in: "$$SCONE::pw:hex$$", want: "68756e74657232"},
		{in: "$$SCONE::bin:base64$$", want: "AP8Q"},
		{in: "$$SCONE::bin:hex$$", want: "00ff10"},
		{in: "$$SCONE::bin$$", want: "\x00\xff\x10"},
		{in: "$$SCONE::key$$", want: string(ca.value.KeyPEM)},
		{in: "$$SCONE::ca$$", want: string(ca.value.CertPEM)},
		{in: "$$SCONE::ca:crt$$", want: string(ca.value.CertPEM)},
		{in: "$$SCONE::ca:privatekey$$", want: string(ca.value.KeyPEM)},
		{in: "$$SCONE::ca:chain$$$$SCONE::pw$$", want: string(ca.value.ChainPEM) + "hunter2"},
		{in: "no placeholder $$ here $HOME", want: "no placeholder $$ here $HOME"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := session.Render(tt.in, vals)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestRenderErrorsHoldNoSecrets(t *testing.T) {
	ca := issue(t, "ca", true, nil, nil)
	vals := session.ValueMap{
		"pw":      {Kind: session.KindASCII, Bytes: []byte("hunter2")},
		"key":     {Kind: session.KindPrivateKey, KeyPEM: ca.value.KeyPEM},
		"nochain": {Kind: session.KindX509, CertPEM: ca.value.CertPEM, KeyPEM: ca.value.KeyPEM},
	}
	tests := []struct {
		in  string
		msg string
	}{
		{in: "$$SCONE::missing$$", msg: `session: placeholder $$SCONE::missing$$: no value for secret "missing"`},
		{in: "$$SCONE::key.key$$", msg: `format "privatekey" needs an x509 or x509-ca secret, this one is private-key`},
		{in: "$$SCONE::pw.crt$$", msg: "this one is ascii"},
		{in: "$$SCONE::key:hex$$", msg: `format "hex" needs an ascii or binary secret`},
		{in: "$$SCONE::nochain.chain$$", msg: `secret "nochain" has no certificate chain`},
		{in: "$$SCONE::pw:rot13$$", msg: `unknown format "rot13"`},
		{in: "$$SCONE::pw", msg: "unterminated placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := session.Render(tt.in, vals)
			require.ErrorContains(t, err, tt.msg)
			assert.NotContains(t, err.Error(), "hunter2")
			assert.NotContains(t, err.Error(), "PRIVATE KEY")
		})
	}
}

func TestRenderServiceErrors(t *testing.T) {
	doc := base + "    command: run \"$$SCONE::bin$$\"\n    environment: {K: \"$$SCONE::pw$$\"}\n"
	s, err := session.Parse([]byte(doc))
	require.NoError(t, err)

	_, err = s.RenderService("nope", session.ValueMap{})
	require.ErrorContains(t, err, `session: "t/s" has no service "nope" (known: svc)`)

	_, err = s.RenderService("svc", session.ValueMap{"bin": {Kind: session.KindBinary, Bytes: []byte("a\x00secret")}})
	require.ErrorContains(t, err, `session: service "svc": command word 1 holds a NUL byte after rendering`)
	assert.NotContains(t, err.Error(), "secret")

	_, err = s.RenderService("svc", session.ValueMap{"bin": {Kind: session.KindBinary, Bytes: []byte("ok")}})
	require.ErrorContains(t, err, `session: service "svc": environment K: placeholder $$SCONE::pw$$: no value for secret "pw"`)

	r, err := s.RenderService("svc", session.ValueMap{
		"bin": {Kind: session.KindBinary, Bytes: []byte("a b")},
		"pw":  {Kind: session.KindASCII, Bytes: []byte("p w")},
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"run", "a b"}, r.Argv, "values never split words")
	assert.Equal(t, "p w", r.Env["K"])
	assert.Empty(t, r.Files)
	assert.True(t, strings.HasPrefix(r.Environ()[0], "K="))
}
