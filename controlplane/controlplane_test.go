package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/proxy/launch"
)

func TestMain(m *testing.M) {
	// The launcher re-executes this test binary as its stage 2.
	launch.MaybeStage2(launch.DecryptFSPF)
	goleak.VerifyTestMain(m)
}

type running struct {
	addrs  controlplane.Addrs
	cancel context.CancelFunc
	done   chan error
}

// start runs the real control plane on loopback with ephemeral ports.
func start(t *testing.T, dataDir, keyFile string) *running {
	t.Helper()
	return startWith(t, controlplane.Config{
		DataDir: dataDir, StoreKeyFile: keyFile, TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Simulation: true, LASAddr: "127.0.0.1:0",
	})
}

// stop cancels the control plane and checks that it stopped cleanly; a second stop returns
// at once.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	err := <-r.done
	assert.NoError(t, err, "a cancelled control plane stops cleanly")
	r.done <- nil
}

func (r *running) client(t *testing.T, identityDir string) *mgmtapi.Client {
	t.Helper()
	pool := mustPool(t, r.addrs.BundlePEM)
	id, err := mgmtapi.LoadOrCreateIdentity(identityDir)
	require.NoError(t, err)
	c, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + r.addrs.Mgmt, Roots: pool, Identity: id})
	require.NoError(t, err)
	return c
}

func exampleDocs(t *testing.T, vars map[string]string) [][]byte {
	t.Helper()
	var docs [][]byte
	for _, f := range []string{"redis-session.yaml", "flask-session.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", "examples", "flask-redis", f))
		require.NoError(t, err)
		doc, err := session.Expand(raw, vars)
		require.NoError(t, err)
		docs = append(docs, doc)
	}
	return docs
}

// TestLaunchedAppSeesInjectedFiles runs the real control plane, uploads the seed's two
// sessions, and launches a shell script as the Flask service: after attestation it sees the
// five /tls files with the policy's contents, and the Flask certificate verifies against the
// exported api_ca_cert with DNS name api (openssl verify).
func TestLaunchedAppSeesInjectedFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the launcher hides injected files in a private mount namespace: run as root (CI does)")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	cp := start(t, filepath.Join(dir, "data"), keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sh, err := filepath.EvalSymlinks("/bin/sh")
	require.NoError(t, err)
	m, err := measure.File(sh)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "seen")
	vars := map[string]string{
		"REDIS_SESSION": "t/redis", "FLASK_SESSION": "t/flask", "ATTESTATION_MODE": "simulation",
		"REDIS_MRENCLAVE": strings.Repeat("a", 64), "PYTHON_MRENCLAVE": m.Hex(),
		"API_FSPF_PATH": "/app", "API_FSPF_KEY": strings.Repeat("c", 64), "API_FSPF_TAG": strings.Repeat("d", 64),
	}
	docs := exampleDocs(t, vars)
	// The Flask service runs a script that copies what it sees; no fspf for a shell script.
	flask := string(docs[1])
	flask = strings.Replace(flask, "command: /usr/bin/python3 /app/rest_api.py", "command: "+sh+" -c 'cat /tls/flask.crt /tls/flask.key /tls/redis-ca.crt /tls/client.crt /tls/client.key > "+out+"; ls /tls >> "+out+"'", 1)
	for _, k := range []string{"    fspf_path: /app\n", "    fspf_key: " + vars["API_FSPF_KEY"] + "\n", "    fspf_tag: " + vars["API_FSPF_TAG"] + "\n"} {
		flask = strings.Replace(flask, k, "", 1)
	}
	flask = strings.Replace(flask, "pwd: /app", "pwd: /", 1)
	docs[1] = []byte(flask)

	owner := cp.client(t, t.TempDir())
	_, err = owner.Create(ctx, []byte("name: t\nversion: \"0.3\"\n"))
	require.NoError(t, err, "namespace t")
	for _, d := range docs {
		_, err := owner.Create(ctx, d)
		require.NoError(t, err)
	}

	bundle, err := ca.ParseCertsPEM(cp.addrs.BundlePEM)
	require.NoError(t, err)
	ac, err := attestapi.Dial(attestapi.ClientConfig{Addr: cp.addrs.Attest, Bundle: bundle, Quotes: sim.Client{Addr: cp.addrs.LAS}})
	require.NoError(t, err)
	defer ac.Close()
	var stderr bytes.Buffer
	code, err := launch.Run(ctx, launch.Options{
		ConfigID: "t/flask/flask_restapi", Binary: sh, Attestor: launch.FromAttestation(ac),
		Stdout: &stderr, Stderr: &stderr,
	})
	require.NoError(t, err, stderr.String())
	require.Equal(t, 0, code, stderr.String())

	seen, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Contains(t, string(seen), "client.crt\nclient.key\nflask.crt\nflask.key\nredis-ca.crt\n")
	assert.Contains(t, string(seen), "-----BEGIN PRIVATE KEY-----")
	_, err = os.Stat("/tls/flask.key")
	assert.True(t, os.IsNotExist(err), "the injected files must not exist outside the app's namespace")

	// The certificate the app saw verifies against the public api_ca_cert with DNS name api.
	apiCA, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + cp.addrs.Mgmt, Roots: mustPool(t, cp.addrs.BundlePEM)})
	require.NoError(t, err)
	pub, err := apiCA.Public(ctx, "t/flask", "api_ca_cert")
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "api_ca.pem")
	require.NoError(t, os.WriteFile(caFile, pub, 0o600))
	crtFile := filepath.Join(t.TempDir(), "flask.crt")
	require.NoError(t, os.WriteFile(crtFile, firstPEM(seen), 0o600))
	res, err := exec.CommandContext(ctx, "openssl", "verify", "-CAfile", caFile, "-verify_hostname", "api", crtFile).CombinedOutput()
	require.NoError(t, err, string(res))
	assert.Contains(t, string(res), ": OK")

	// The private keys are not readable through the API at all.
	for _, secret := range []string{"flask_key", "api_ca_key"} {
		_, err := apiCA.Public(ctx, "t/flask", secret)
		require.Error(t, err)
	}
}

// firstPEM returns the first PEM block of data.
func firstPEM(data []byte) []byte {
	end := []byte("-----END CERTIFICATE-----\n")
	if i := bytes.Index(data, end); i >= 0 {
		return data[:i+len(end)]
	}
	return nil
}

// TestRestartKeepsCAAndSecrets restarts the control plane on the same data dir and key: the CA
// and every secret are the same; with another key it refuses to start.
func TestRestartKeepsCAAndSecrets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	idDir := t.TempDir()
	vars := map[string]string{
		"REDIS_SESSION": "r/redis", "FLASK_SESSION": "r/flask", "ATTESTATION_MODE": "simulation",
		"REDIS_MRENCLAVE": strings.Repeat("a", 64), "PYTHON_MRENCLAVE": strings.Repeat("b", 64),
		"API_FSPF_PATH": "/app", "API_FSPF_KEY": strings.Repeat("c", 64), "API_FSPF_TAG": strings.Repeat("d", 64),
	}

	first := start(t, dir, keyFile)
	c := first.client(t, idDir)
	_, err = c.Create(ctx, []byte("name: r\nversion: \"0.3\"\n"))
	require.NoError(t, err, "namespace r")
	for _, d := range exampleDocs(t, vars) {
		_, err := c.Create(ctx, d)
		require.NoError(t, err)
	}
	pub1, err := c.Public(ctx, "r/flask", "api_ca_cert")
	require.NoError(t, err)
	got1, err := c.Get(ctx, "r/flask")
	require.NoError(t, err)
	bundle1 := first.addrs.BundlePEM
	first.stop(t)

	second := start(t, dir, keyFile)
	assert.Equal(t, bundle1, second.addrs.BundlePEM, "same CA after a restart")
	c = second.client(t, idDir)
	pub2, err := c.Public(ctx, "r/flask", "api_ca_cert")
	require.NoError(t, err)
	assert.Equal(t, pub1, pub2, "same generated CA certificate after a restart")
	got2, err := c.Get(ctx, "r/flask")
	require.NoError(t, err)
	assert.Equal(t, got1.Hash, got2.Hash)
	second.stop(t)

	otherKey := filepath.Join(t.TempDir(), "other.key")
	_, err = store.GenerateKeyFile(otherKey)
	require.NoError(t, err)
	err = controlplane.Run(ctx, controlplane.Config{DataDir: dir, StoreKeyFile: otherKey, TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wrong store key")
}

func mustPool(t *testing.T, pemBytes []byte) *x509.CertPool {
	t.Helper()
	pool, err := ca.PoolFromPEM(pemBytes)
	require.NoError(t, err)
	return pool
}

// TestWebhookServedByControlPlane sends an AdmissionReview to the webhook the control plane
// serves (TLS verified against its CA) for a pod that opts in to a stored session: the answer
// allows it with a JSON patch that wraps the app with the launcher; an unknown config ID is
// refused with the reason.
func TestWebhookServedByControlPlane(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan controlplane.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Config{
			DataDir: dir, StoreKeyFile: keyFile, TrustDomain: "attestmesh.local",
			MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			WebhookAddr: "127.0.0.1:0", InjectorImage: "registry.example/attestmesh:test",
			Ready: func(a controlplane.Addrs) { ready <- a },
		})
	}()
	var addrs controlplane.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	}
	defer func() { cancel(); assert.NoError(t, <-done) }()

	c := (&running{addrs: addrs}).client(t, t.TempDir())
	_, err = c.Create(ctx, []byte("name: web\nversion: \"0.3\"\n"))
	require.NoError(t, err, "namespace web")
	_, err = c.Create(ctx, []byte("name: web/app\nversion: \"0.3\"\nservices:\n  - name: svc\n    mrenclaves: [\""+strings.Repeat("a", 64)+"\"]\n    image_name: img\nimages:\n  - name: img\n    injection_files:\n      - path: /tls/x.pem\n        content: hello\n"))
	require.NoError(t, err)

	review := func(configID string) map[string]any {
		t.Helper()
		body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},` +
			`"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","namespace":"default",` +
			`"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"attestmesh.io/config-id":"` + configID + `"}},` +
			`"spec":{"containers":[{"name":"app","image":"app:1","command":["/usr/bin/app"]}]}}}}`
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mustPool(t, addrs.BundlePEM), MinVersion: tls.VersionTLS12}}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addrs.Webhook+injector.Path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return out["response"].(map[string]any)
	}

	ok := review("web/app/svc")
	assert.Equal(t, true, ok["allowed"])
	patch, err := base64.StdEncoding.DecodeString(ok["patch"].(string))
	require.NoError(t, err)
	assert.Contains(t, string(patch), `"launch"`)
	assert.Contains(t, string(patch), "registry.example/attestmesh:test")
	assert.Contains(t, string(patch), `"medium":"Memory"`)

	refused := review("web/nope/svc")
	assert.Equal(t, false, refused["allowed"])
	assert.Contains(t, refused["status"].(map[string]any)["message"], "web/nope")
}
