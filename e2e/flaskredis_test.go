//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

// What the example names (examples/flask-redis).
const (
	flaskSession  = "flask-redis/flask"
	redisSession  = "flask-redis/redis"
	apiPort       = "4996"
	redisPort     = "6379"
	redisListener = "inbound|6379"
	python        = "/usr/bin/python3"
	redisServer   = "/usr/bin/redis-server"
)

var (
	flaskID = spiffeid.RequireFromString("spiffe://attestmesh.local/flask-redis/flask/flask_restapi")
	redisID = spiffeid.RequireFromString("spiffe://attestmesh.local/flask-redis/redis/redis")
)

// TestFlaskRedis runs the example with `attestmesh up` (local.Up, in this process, with the
// freshly built binary as sidecars and launchers) and checks what a user relies on, in order:
// the API, that Redis is reachable only through its sidecar, that launches are refused when the
// code, the binary or the policy is wrong, and that a real Prometheus sees it all. Then it stops
// the mesh and checks that nothing is left behind.
func TestFlaskRedis(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()

	start := time.Now()
	bin := e2etest.BuildAttestmesh(ctx, t)
	t.Logf("attestmesh built in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	m := startMesh(ctx, t, bin)
	t.Logf("mesh up in %s", time.Since(start).Round(time.Millisecond))
	s := &suite{ctx: ctx, m: m, prom: startPrometheus(ctx, t, m)}

	t.Run("API", s.api)
	t.Run("RedisOnlyThroughSidecar", s.redisIsolation)
	t.Run("NegativeLaunches", s.negativeLaunches)
	t.Run("Prometheus", s.prometheus)
	t.Run("Teardown", s.teardown)
}

// suite holds what the steps of TestFlaskRedis share; each step is a subtest.
type suite struct {
	ctx  context.Context // bounds the whole test
	m    *mesh
	prom *prometheus
}

// api: records over HTTPS, the server verified against api_ca_cert from the public values
// endpoint with the DNS name api.
func (s *suite) api(t *testing.T) {
	ctx, m := s.ctx, s.m
	apiCA := fetchAPICA(ctx, t, m)
	roots := x509.NewCertPool()
	roots.AddCert(apiCA)
	api := m.apiClient(&tls.Config{ServerName: "api", RootCAs: roots, MinVersion: tls.VersionTLS12})

	form := url.Values{
		"fname": {"Ada"}, "lname": {"Lovelace"}, "address": {"12 St James's Square"}, "city": {"London"},
		"iban": {"GB33BUKB20201555555555"}, "ssn": {"078-05-1120"}, "email": {"ada@example.com"},
	}
	const id = "e2e-1"

	status, created, state := apiCall(ctx, t, api, http.MethodPost, "/patient/"+id, form)
	require.Equal(t, http.StatusCreated, status, "POST /patient/%s: %v", id, created)
	for k, v := range form {
		assert.Equal(t, v[0], created[k], "field %s of the created record", k)
	}
	assert.Equal(t, id, created["id"])
	score, ok := created["score"].(float64)
	require.True(t, ok, "score is a number: %#v", created["score"])

	// The server's certificate: issued by api_ca_cert for the DNS name api.
	require.NotEmpty(t, state.VerifiedChains)
	chain := state.VerifiedChains[0]
	assert.Contains(t, chain[0].DNSNames, "api")
	assert.True(t, chain[len(chain)-1].Equal(apiCA), "the chain ends at api_ca_cert")

	status, got, _ := apiCall(ctx, t, api, http.MethodGet, "/patient/"+id, nil)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, created, got, "GET returns the record that POST stored")

	status, sc, _ := apiCall(ctx, t, api, http.MethodGet, "/score/"+id, nil)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, map[string]any{"id": id, "score": score}, sc, "GET /score returns the stored score, a number")

	other := url.Values{"fname": {"Mallory"}}
	status, _, _ = apiCall(ctx, t, api, http.MethodPost, "/patient/"+id, other)
	assert.Equal(t, http.StatusForbidden, status, "a second POST of the same id")
	status, got, _ = apiCall(ctx, t, api, http.MethodGet, "/patient/"+id, nil)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, created, got, "the refused POST changed nothing")

	for _, path := range []string{"/patient/e2e-unknown", "/score/e2e-unknown"} {
		status, _, _ = apiCall(ctx, t, api, http.MethodGet, path, nil)
		assert.Equal(t, http.StatusNotFound, status, "GET %s", path)
	}

	// A client that does not trust api_ca_cert (it trusts the mesh CA instead) refuses the
	// server, and so does one that trusts it but expects another name.
	distrust := m.apiClient(&tls.Config{ServerName: "api", RootCAs: m.meshRoots(), MinVersion: tls.VersionTLS12})
	err := apiRequest(ctx, distrust, http.MethodGet, "/patient/"+id)
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "a client without api_ca_cert")
	wrongName := m.apiClient(&tls.Config{ServerName: "redis", RootCAs: roots, MinVersion: tls.VersionTLS12})
	err = apiRequest(ctx, wrongName, http.MethodGet, "/patient/"+id)
	var hostname x509.HostnameError
	require.ErrorAs(t, err, &hostname, "a client that expects the name redis")
}

// fetchAPICA reads api_ca_cert from the management API's public values endpoint, without a
// client certificate, verifying the control plane against its CA bundle.
func fetchAPICA(ctx context.Context, t *testing.T, m *mesh) *x509.Certificate {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: m.meshRoots(), MinVersion: tls.VersionTLS12},
	}}
	defer hc.CloseIdleConnections()
	u := "https://" + m.info.ControlPlane.Mgmt + "/v1/public/" + flaskSession + "/api_ca_cert"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", u, body)

	block, rest := pem.Decode(body)
	require.NotNil(t, block, "a PEM certificate: %q", body)
	require.Equal(t, "CERTIFICATE", block.Type)
	require.Empty(t, bytes.TrimSpace(rest), "exactly one certificate")
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	require.True(t, cert.IsCA, "api_ca_cert is a CA")
	// The same certificate that `attestmesh up` exported to the state directory.
	exported, err := os.ReadFile(m.info.ExportedCAs[flaskSession+"/api_ca_cert"])
	require.NoError(t, err)
	assert.Equal(t, string(exported), string(body))
	return cert
}

// apiCall sends one request to the API and decodes its JSON answer (nil unless 2xx).
func apiCall(ctx context.Context, t *testing.T, hc *http.Client, method, path string, form url.Values) (int, map[string]any, *tls.ConnectionState) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://api:"+apiPort+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, nil, resp.TLS
	}
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), "%s %s: %s", method, path, raw)
	return resp.StatusCode, out, resp.TLS
}

func apiRequest(ctx context.Context, hc *http.Client, method, path string) error {
	req, err := http.NewRequestWithContext(ctx, method, "https://api:"+apiPort+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return fmt.Errorf("%s %s: answered %s", method, path, resp.Status)
}

// redisIsolation: from the host (outside Redis's namespace), the sidecar's port refuses a
// plaintext client, a client of another CA, and a valid SVID whose ID may not connect.
func (s *suite) redisIsolation(t *testing.T) {
	ctx, m := s.ctx, s.m
	redis := m.info.Services["redis"]
	addr := net.JoinHostPort(redis.Address.String(), redisPort)
	metricsURL := "http://" + redis.AdminAddr + "/metrics"
	failures := func(reason string) string {
		return fmt.Sprintf(`attestmesh_sidecar_tls_handshake_failures_total{listener=%q,reason=%q}`, redisListener, reason)
	}
	denials := fmt.Sprintf(`attestmesh_sidecar_authz_denials_total{listener=%q}`, redisListener)

	t.Run("Plaintext", func(t *testing.T) {
		before := e2etest.Scrape(ctx, t, metricsURL)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		require.NoError(t, err, "the sidecar listens at %s", addr)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = c.Write([]byte("PING\r\n"))
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the sidecar closes the connection (read: %v)", err)
		assert.NotContains(t, string(got), "PONG", "a plaintext PING never reaches Redis")
		waitMetric(ctx, t, metricsURL, failures("plaintext"), e2etest.Sample(before, failures("plaintext"))+1)
	})

	t.Run("OtherCA", func(t *testing.T) {
		// A certificate with the ID that Redis does allow, from a CA that is not the mesh's.
		svid := foreignSVID(t, flaskID)
		before := e2etest.Scrape(ctx, t, metricsURL)
		err := redisExchange(ctx, addr, m.clientTLS(svid))
		require.ErrorContains(t, err, "remote error: tls: bad certificate")
		waitMetric(ctx, t, metricsURL, failures("unknown_ca"), e2etest.Sample(before, failures("unknown_ca"))+1)
		assert.InDelta(t, e2etest.Sample(before, denials), e2etest.Sample(e2etest.Scrape(ctx, t, metricsURL), denials), 0, "not counted as an authorization denial")
	})

	t.Run("ServiceNotAllowed", func(t *testing.T) {
		svid := m.intruderSVID(ctx, t)
		// A real SVID of the mesh: it verifies against the mesh's CA.
		_, _, err := x509svid.Verify(svid.Certificates, m.meshBundle())
		require.NoError(t, err)

		before := e2etest.Scrape(ctx, t, metricsURL)
		err = redisExchange(ctx, addr, m.clientTLS(svid))
		require.ErrorContains(t, err, "remote error: tls: bad certificate")
		waitMetric(ctx, t, metricsURL, denials, e2etest.Sample(before, denials)+1)
		after := e2etest.Scrape(ctx, t, metricsURL)
		for _, r := range []string{"unknown_ca", "bad_certificate", "expired"} {
			assert.InDelta(t, e2etest.Sample(before, failures(r)), e2etest.Sample(after, failures(r)), 0, "not counted as a %s handshake failure", r)
		}
		// The reason, with the refused ID, in the Redis sidecar's log.
		logFile := filepath.Join(m.info.StateDir, "redis-sidecar.log")
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			line := findLog(c, logFile, "peer not authorized: handshake refused")
			assert.Contains(c, line["error"], svid.ID.String())
			assert.Contains(c, line["listener"], redisListener)
		}, 10*time.Second, 100*time.Millisecond, "the refusal in %s", logFile)
	})
}

// redisExchange connects with cfg, sends a Redis PING and reads the answer. In TLS 1.3 the
// client finishes its handshake before the server has checked the client's certificate: a
// refusal arrives as an alert on the first read.
func redisExchange(ctx context.Context, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	return fmt.Errorf("the sidecar let the connection through; it answered %q", buf[:n])
}

// foreignSVID makes an X.509-SVID for id from a CA that the mesh does not know.
func foreignSVID(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{id.TrustDomain().ID().URL()},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// intruderSVID creates a session with a service that no mesh route lets reach Redis and attests
// as its sidecar (the attestmesh binary's measurement, a quote from the simulated LAS): a real
// SVID from the mesh CA.
func (m *mesh) intruderSVID(ctx context.Context, t *testing.T) *x509svid.SVID {
	t.Helper()
	doc := fmt.Sprintf(`name: e2e/intruder
version: "0.3"
security:
  attestation:
    mode: simulation
    tolerate: [debug-mode, hyperthreading, outdated-tcb, software-hardening-needed]
services:
  - name: intruder
    mrenclaves: [%s]
    command: /bin/true
`, m.binMR.Hex())
	m.namespace(ctx, t, "e2e")
	_, err := m.info.Client.Create(ctx, []byte(doc))
	require.NoError(t, err)

	client, err := attestapi.Dial(attestapi.ClientConfig{
		Addr: m.info.ControlPlane.Attest, Bundle: m.caCerts, Quotes: sim.Client{Addr: m.info.ControlPlane.LAS},
	})
	require.NoError(t, err)
	defer client.Close()
	// The intruder's app attests (the session accepts the attestmesh binary for it), and its
	// sidecar presents the grant it receives: a real, attested identity, just not one that the
	// mesh lets reach Redis.
	appKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	app, err := client.Attest(ctx, attestapi.Request{ConfigID: "e2e/intruder/intruder", Role: attestationpb.Role_ROLE_APP,
		Key: appKey, Evidence: attestapi.Evidence{MREnclave: m.binMR}})
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	res, err := client.Attest(ctx, attestapi.Request{ConfigID: "e2e/intruder/intruder", Role: attestationpb.Role_ROLE_SIDECAR,
		Key: key, Evidence: attestapi.Evidence{MREnclave: m.binMR}, SidecarGrant: app.SidecarGrant})
	require.NoError(t, err)
	require.Equal(t, "spiffe://attestmesh.local/e2e/intruder/intruder", res.ID.String())
	assert.Equal(t, "simulation", res.TEE)
	return &x509svid.SVID{ID: res.ID, Certificates: res.SVID, PrivateKey: key}
}

// namespace creates the namespace session name for the test's own sessions, once.
func (m *mesh) namespace(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	if _, err := m.info.Client.Get(ctx, name); err == nil {
		return
	}
	_, err := m.info.Client.Create(ctx, []byte("name: "+name+"\nversion: \"0.3\"\n"))
	require.NoError(t, err, "namespace %s", name)
}

// clientTLS is an mTLS client configuration that presents svid and accepts only the Redis
// sidecar's attested identity from the mesh CA.
func (m *mesh) clientTLS(svid *x509svid.SVID) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(svid, m.meshBundle(), tlsconfig.AuthorizeID(redisID))
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// findLog returns the last JSON log line of file whose msg is msg.
func findLog(c *assert.CollectT, file, msg string) map[string]any {
	raw, err := os.ReadFile(file)
	require.NoError(c, err)
	var found map[string]any
	for line := range bytes.Lines(raw) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == msg {
			found = rec
		}
	}
	assert.NotNil(c, found, "no log line %q", msg)
	return found
}

// negativeLaunches runs `attestmesh launch` on the host against the control plane: the
// unchanged code under the right binary starts; a changed byte in the encrypted code, another
// python binary and a policy that does not list the binary are each refused with the reason,
// and the app does not start.
func (s *suite) negativeLaunches(t *testing.T) {
	ctx, m := s.ctx, s.m
	dir := t.TempDir()
	// The flask service's encrypted code: two copies, one with one changed byte.
	fspfKey, fspfTag, fspfPath := m.flaskFSPF(ctx, t)
	pristine := filepath.Join(dir, "code")
	tampered := filepath.Join(dir, "tampered")
	require.NoError(t, os.CopyFS(pristine, os.DirFS(fspfPath)))
	require.NoError(t, os.CopyFS(tampered, os.DirFS(fspfPath)))
	flipByte(t, filepath.Join(tampered, "rest_api.py"))

	// A python interpreter with one more byte: a different binary.
	otherPython := filepath.Join(dir, "python3")
	copyFile(t, python, otherPython, 0o755)
	f, err := os.OpenFile(otherPython, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{0})
	require.NoError(t, err)
	require.NoError(t, f.Close())

	pyMR := mustMeasure(t, python)
	otherMR := mustMeasure(t, otherPython)
	redisMR := mustMeasure(t, redisServer)

	// Each service's "app" copies the decrypted rest_api.py to a marker file: a marker means
	// that the launcher did start it, with the plaintext code.
	marker := func(name string) string { return filepath.Join(dir, name+".started") }
	service := func(name, mre, code string) string {
		return fmt.Sprintf(`  - name: %[1]s
    mrenclaves: [%[2]s]
    command: %[3]s -c "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])" %[4]s/rest_api.py %[5]s
    pwd: /
    fspf_path: %[4]s
    fspf_key: %[6]s
    fspf_tag: %[7]s
`, name, mre, python, code, marker(name), fspfKey, fspfTag)
	}
	doc := `name: e2e/launch
version: "0.3"
security:
  attestation:
    mode: simulation
    tolerate: [debug-mode, hyperthreading, outdated-tcb, software-hardening-needed]
services:
` + service("good", pyMR.Hex(), pristine) + service("tampered", pyMR.Hex(), tampered) + service("unlisted", redisMR.Hex(), pristine)
	m.namespace(ctx, t, "e2e")
	_, err = m.info.Client.Create(ctx, []byte(doc))
	require.NoError(t, err)

	cases := []struct {
		name    string
		service string
		binary  string
		want    []string // in stderr; empty means the launch succeeds
	}{
		{"ChangedByteInEncryptedCode", "tampered", python, []string{
			"refusing to start the application",
			"fspf: tree does not match its manifest: rest_api.py",
		}},
		// The launcher is told what it presented; what the session allows stays in the
		// control plane's log.
		{"DifferentPythonBinary", "good", otherPython, []string{
			"attestation of \"e2e/launch/good\" refused",
			fmt.Sprintf(`attestation refused (mrenclave_mismatch): mrenclave %s is not accepted by service \"good\"`, otherMR.Hex()),
		}},
		{"BinaryNotInSession", "unlisted", python, []string{
			"attestation of \"e2e/launch/unlisted\" refused",
			fmt.Sprintf(`attestation refused (mrenclave_mismatch): mrenclave %s is not accepted by service \"unlisted\"`, pyMR.Hex()),
		}},
		// The control: the same session and code, the right binary, starts.
		{"Control", "good", python, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := m.launch(ctx, t, "e2e/launch/"+tc.service, tc.binary)
			if tc.want == nil {
				require.Equal(t, 0, code, "stderr:\n%s", stderr)
				got, err := os.ReadFile(marker(tc.service))
				require.NoError(t, err, "the app ran")
				src, err := os.ReadFile("../examples/flask-redis/app/rest_api.py")
				require.NoError(t, err)
				assert.Equal(t, string(src), string(got), "the app read the decrypted code")
				return
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			t.Logf("launch refused: %s", lines[len(lines)-1])
			assert.Equal(t, 1, code, "launch exits 1 when it refuses; stderr:\n%s", stderr)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.NotContains(t, stderr, "session allows", "the launcher is not told the allowed measurements")
			assert.NoFileExists(t, marker(tc.service), "the app must not start")
		})
	}
	cpLog, err := os.ReadFile(filepath.Join(m.info.StateDir, "controlplane.log"))
	require.NoError(t, err)
	assert.Contains(t, string(cpLog), fmt.Sprintf("mrenclave mismatch: got %s, session allows [%s]", otherMR.Hex(), pyMR.Hex()),
		"the control plane's log holds the details")
}

// flaskFSPF reads the flask service's fspf key, tag and path from its session.
func (m *mesh) flaskFSPF(ctx context.Context, t *testing.T) (key, tag, path string) {
	t.Helper()
	resp, err := m.info.Client.Get(ctx, flaskSession)
	require.NoError(t, err)
	var doc struct {
		Services []struct {
			Name string `yaml:"name"`
			Path string `yaml:"fspf_path"`
			Key  string `yaml:"fspf_key"`
			Tag  string `yaml:"fspf_tag"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(resp.Session), &doc))
	for _, s := range doc.Services {
		if s.Name == "flask_restapi" {
			require.NotEmpty(t, s.Key)
			require.NotEmpty(t, s.Tag)
			require.DirExists(t, s.Path)
			return s.Key, s.Tag, s.Path
		}
	}
	require.FailNow(t, "the flask session has no flask_restapi service", resp.Session)
	return "", "", ""
}

// launch runs `attestmesh launch` on the host and returns its exit status and stderr.
func (m *mesh) launch(ctx context.Context, t *testing.T, configID, binary string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.bin, "launch", "--config-id", configID,
		"--attest-addr", m.info.ControlPlane.Attest, "--ca-file", m.info.CAFile, "--las-addr", m.info.ControlPlane.LAS,
		"--", binary)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stderr.String()
	}
	require.NoError(t, err, "running launch")
	return 0, stderr.String()
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotEmpty(t, b)
	b[len(b)/2] ^= 0x01
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, b, mode))
}

func mustMeasure(t *testing.T, path string) measure.MREnclave {
	t.Helper()
	m, err := measure.File(path)
	require.NoError(t, err)
	return m
}
