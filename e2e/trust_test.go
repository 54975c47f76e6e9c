//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

// TestTwoTeams replays, with the real binary and two client identities, what the security
// review did: alice's exports cannot be taken by mallory, a hardware session's secrets never
// reach a simulation session, a certificate export leaves its CA key home, and a registration
// stops configuring sidecars once its registrant loses the rights it needs.
func TestTwoTeams(t *testing.T) {
	if os.Geteuid() != 0 {
		e2etest.Prerequisite(t, "skipping: the launcher needs root for its private mount namespace (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin := e2etest.BuildAttestmesh(ctx, t)
	cp := startControlPlane(ctx, t, bin)
	dir := t.TempDir()
	alice, mallory, deputy := filepath.Join(dir, "alice"), filepath.Join(dir, "mallory"), filepath.Join(dir, "deputy")
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	run := func(identity string, args ...string) (int, string, string) {
		if identity != "" {
			args = append(args, "--controlplane", "https://"+cp.mgmt, "--ca-file", cp.caFile, "--identity-dir", identity)
		}
		return runBin(ctx, t, bin, args...)
	}
	cat := mustMeasure(t, "/bin/cat").Hex()
	namespace := "name: victimns\nversion: \"0.3\"\n"
	redis := `name: victimns/redis
version: "0.3"
security: {attestation: {mode: simulation}}
secrets:
  - {name: redis_ca_key, kind: private-key}
  - {name: redis_ca_cert, kind: x509-ca, private_key: redis_ca_key, export: [{session: victimns/flask}]}
  - name: redis_client_key
    kind: private-key
    export: [{session: victimns/flask}]
  - {name: redis_client_cert, kind: x509, private_key: redis_client_key, issuer: redis_ca_cert, export: [{session: victimns/flask}]}
`
	importer := func(name, mode string) string {
		return fmt.Sprintf(`name: %s
version: "0.3"
security: {attestation: {mode: %s}}
services:
  - name: app
    image_name: img
    mrenclaves: [%s]
    command: /bin/cat /tls/ca.crt /tls/client.crt /tls/client.key
images:
  - name: img
    injection_files:
      - {path: /tls/ca.crt, content: "$$SCONE::redis_ca_cert.chain$$"}
      - {path: /tls/client.crt, content: "$$SCONE::redis_client_cert.crt$$"}
      - {path: /tls/client.key, content: "$$SCONE::redis_client_cert.key$$"}
secrets:
  - {name: redis_ca_cert, import: {session: victimns/redis, secret: redis_ca_cert}}
  - {name: redis_client_cert, import: {session: victimns/redis, secret: redis_client_cert}}
`, name, mode, cat)
	}
	for _, doc := range []string{namespace, redis} {
		code, _, stderr := run(alice, "session", "create", "-f", file("a.yaml", doc))
		require.Equal(t, 0, code, stderr)
	}

	t.Run("Squatting", func(t *testing.T) {
		// Mallory takes the name alice's exports point to, first: refused by the namespace.
		code, _, stderr := run(mallory, "session", "create", "-f", file("m.yaml", importer("victimns/flask", "simulation")))
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `cannot create session "victimns/flask": its namespace session "victimns" does not exist or does not let this client create sessions in it`)
		// Her own session importing from alice's: refused, and told nothing about alice's.
		code, _, stderr = run(mallory, "session", "create", "-f", file("m.yaml", "name: mallory\nversion: \"0.3\"\n"))
		require.Equal(t, 0, code, stderr)
		code, _, stderr = run(mallory, "session", "create", "-f", file("m.yaml", importer("mallory/flask", "simulation")))
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `imports "redis_ca_cert" from session "victimns/redis": not found or not permitted`)
		for _, leak := range []string{"redis_ca_key", "victimns/flask", "redis_client_key"} {
			assert.NotContains(t, stderr, leak)
		}
		code, _, stderr = run(mallory, "session", "get", "victimns/redis")
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `session "victimns/redis" not found or not permitted (HTTP 404)`)
		// And her launcher gets nothing.
		code, out := cp.launch(ctx, t, bin, "victimns/flask/app", "/bin/cat")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, `attestation refused (unknown_service): config ID "victimns/flask/app" names no session and service known here`)
		assert.NotContains(t, out, "PRIVATE KEY")
	})

	t.Run("CertificateExportWithoutKey", func(t *testing.T) {
		// Alice's own importer gets the CA's certificate and the client's key, never the CA's key.
		code, _, stderr := run(alice, "session", "create", "-f", file("a.yaml", importer("victimns/flask", "simulation")))
		require.Equal(t, 0, code, stderr)
		code, out := cp.launch(ctx, t, bin, "victimns/flask/app", "/bin/cat")
		require.Equal(t, 0, code, out)
		assert.Equal(t, 1, strings.Count(out, "BEGIN PRIVATE KEY"), "one key: the exported client key")
		assert.Equal(t, 2, strings.Count(out, "BEGIN CERTIFICATE"), "the CA and the client certificate")
		// Asking for the CA's key is refused at create (and by session check, offline).
		withKey := strings.Replace(importer("victimns/flask2", "simulation"), "redis_client_cert.key", "redis_ca_cert.key", 1)
		code, stdout, _ := run("", "session", "check", "-f", file("a.yaml", withKey), "-f", file("r.yaml", strings.ReplaceAll(redis, "victimns/flask", "victimns/flask2")))
		assert.Equal(t, 1, code)
		assert.Contains(t, stdout, `placeholder $$SCONE::redis_ca_cert.key$$ needs the private key of certificate "redis_ca_cert" of session "victimns/redis", but its private_key secret "redis_ca_key" is not exported`)
	})

	t.Run("ModeDowngrade", func(t *testing.T) {
		hw := strings.NewReplacer("victimns/redis", "victimns/hw", "mode: simulation", "mode: hardware", "victimns/flask", "victimns/sim").Replace(redis)
		code, _, stderr := run(alice, "session", "create", "-f", file("a.yaml", hw))
		require.Equal(t, 0, code, stderr)
		sim := strings.ReplaceAll(importer("victimns/sim", "simulation"), "victimns/redis", "victimns/hw")
		code, _, stderr = run(alice, "session", "create", "-f", file("a.yaml", sim))
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `session "victimns/hw" (security.attestation.mode: hardware) exports to session "victimns/sim", `+
			`which accepts simulated quotes (security.attestation.mode: simulation)`)
	})

	t.Run("RegistrationFollowsRights", func(t *testing.T) {
		cp.registrationFollowsRights(ctx, t, bin, run, file, alice, deputy)
	})
}

// cpProc is an `attestmesh controlplane` process on loopback.
type cpProc struct {
	mgmt, attest, las, metrics string
	caFile                     string
}

func startControlPlane(ctx context.Context, t *testing.T, bin string) *cpProc {
	t.Helper()
	// The ports are picked free and then bound by the control plane: another process may take
	// one in between (these machines run several test suites at once). That, and only that, is
	// retried with other ports.
	for attempt := 1; ; attempt++ {
		cp, log, err := tryControlPlane(ctx, t, bin)
		if err == nil {
			return cp
		}
		if attempt == 3 || !strings.Contains(log, "address already in use") {
			t.Fatalf("the control plane did not start: %v\n--- control plane log ---\n%s", err, log)
		}
		t.Logf("a port was taken between picking and binding it; starting again with others (%d)", attempt)
	}
}

// tryControlPlane starts the control plane on free loopback ports; on failure it returns the
// log, and the process is gone.
func tryControlPlane(ctx context.Context, t *testing.T, bin string) (*cpProc, string, error) {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "store.key")
	require.NoError(t, os.WriteFile(keyFile, []byte(hex.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))), 0o600))
	cp := &cpProc{mgmt: freeLoopbackAddr(ctx, t), attest: freeLoopbackAddr(ctx, t), las: freeLoopbackAddr(ctx, t), metrics: freeLoopbackAddr(ctx, t)}
	data := filepath.Join(dir, "data")
	cp.caFile = filepath.Join(data, "ca.pem")
	logFile, err := os.Create(filepath.Join(dir, "controlplane.log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, "controlplane", "--data-dir", data, "--store-key-file", keyFile, "--simulation", //nolint:noctx // stopped in cleanup
		"--mgmt-addr", cp.mgmt, "--attest-addr", cp.attest, "--xds-addr", freeLoopbackAddr(ctx, t), "--metrics-addr", cp.metrics,
		"--las-addr", cp.las, "--advertise-host", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = logFile.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			stop()
			b, _ := os.ReadFile(logFile.Name())
			return nil, string(b), errors.New("it exited")
		case <-ctx.Done():
			stop()
			return nil, "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := os.Stat(cp.caFile); err == nil {
			if c, err := net.DialTimeout("tcp", cp.mgmt, time.Second); err == nil {
				_ = c.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(logFile.Name())
			return nil, string(b), errors.New("not serving within 30 s")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("--- control plane log ---\n%s", b)
		}
	})
	return cp, "", nil
}

// launch runs `attestmesh launch` for configID with binary; it returns the exit code and the
// combined output.
func (cp *cpProc) launch(ctx context.Context, t *testing.T, bin, configID, binary string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "launch", "--config-id", configID, "--attest-addr", cp.attest, "--ca-file", cp.caFile,
		"--las-addr", cp.las, "--no-sidecar-grant", "--", binary)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err, "running launch: %s", out)
	return 0, string(out)
}

func runBin(ctx context.Context, t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	require.NoError(t, err, "running %v", args)
	return 0, stdout.String(), stderr.String()
}

// registrationFollowsRights: alice lets a deputy update her sessions; the deputy registers a
// mesh, and the real sidecar (beside its app's launcher) gets its listener; alice takes the
// deputy's rights away, and the listener goes, counted; alice deletes the registration.
func (cp *cpProc) registrationFollowsRights(ctx context.Context, t *testing.T, bin string,
	run func(string, ...string) (int, string, string), file func(string, string) string, alice, deputy string) {
	t.Helper()
	deputyID, err := mgmtapi.LoadOrCreateIdentity(deputy)
	require.NoError(t, err)
	deputyPEM := strings.ReplaceAll(strings.TrimSpace(string(ca.MarshalCertsPEM(deputyID.Leaf))), "\n", "\n      ")
	sleep := mustMeasure(t, "/bin/sleep").Hex()
	svc := func(name, policy string) string {
		return fmt.Sprintf("name: victimns/%[1]s\nversion: \"0.3\"\n%[2]ssecurity: {attestation: {mode: simulation}}\n"+
			"services:\n  - {name: %[1]s, mrenclaves: [%[3]s], command: /bin/sleep 300}\n", name, policy, sleep)
	}
	withDeputy := "access_policy:\n  update:\n    - CREATOR\n    - |\n      " + deputyPEM + "\n"
	for _, name := range []string{"srv", "cli"} {
		code, _, stderr := run(alice, "session", "create", "-f", file("s.yaml", svc(name, withDeputy)))
		require.Equal(t, 0, code, stderr)
	}
	port := freePort(t)
	reg, err := (&mgmtapi.Registration{
		Mesh: fmt.Sprintf("name: rights\nsessions: [unused.yaml]\nservices:\n"+
			"  - {name: srv, config_id: victimns/srv/srv, binary: /bin/sleep, ports: [{port: %d}]}\n"+
			"  - {name: cli, config_id: victimns/cli/cli, binary: /bin/sleep, connects: [{service: srv, port: %d, local_port: %d}]}\n",
			port, port, freePort(t)),
		Endpoints: map[string]string{"srv": "127.0.0.2", "cli": "127.0.0.3"},
	}).Marshal()
	require.NoError(t, err)
	pool, err := ca.PoolFromPEM(mustRead(t, cp.caFile))
	require.NoError(t, err)
	dc, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + cp.mgmt, Roots: pool, Identity: deputyID})
	require.NoError(t, err)
	// A mesh is named after a session its registrant controls: the deputy's own.
	code, _, stderr := run(deputy, "session", "create", "-f", file("rights.yaml", "name: rights\nversion: \"0.3\"\n"))
	require.Equal(t, 0, code, stderr)
	require.NoError(t, dc.PutMesh(ctx, "rights", reg), "the deputy may update both sessions")

	// The server's sidecar and its app's launcher, as `attestmesh up` runs them: from the
	// sidecar build beside bin, whose measurement the control plane accepts for sidecars.
	admin := freeLoopbackAddr(ctx, t)
	common := []string{"--attest-addr", cp.attest, "--ca-file", cp.caFile, "--las-addr", cp.las}
	sidecarBin := controlplane.DefaultSidecarBinary(bin)
	require.NotEqual(t, bin, sidecarBin, "the sidecar build beside %s", bin)
	startBackground(t, sidecarBin, append([]string{"proxy", "--config-id", "victimns/srv/srv", "--admin-addr", admin}, common...)...)
	startBackground(t, sidecarBin, append(append([]string{"launch", "--config-id", "victimns/srv/srv"}, common...), "--", "/bin/sleep")...)
	listeners := func() (int, error) {
		body, err := e2etest.Get(ctx, "http://"+admin+"/config_dump")
		if err != nil {
			return -1, err
		}
		return strings.Count(body, `"direction": "inbound"`), nil
	}
	require.Eventually(t, func() bool { n, _ := listeners(); return n == 1 }, 30*time.Second, 200*time.Millisecond,
		"the sidecar, attested with its app's grant, gets the deputy's listener")

	// Alice takes the deputy's update rights away from one session.
	code, out, stderr := run(alice, "session", "get", "victimns/srv")
	require.Equal(t, 0, code, stderr)
	hash := strings.Fields(strings.SplitN(out, "hash ", 2)[1])[0]
	code, _, stderr = run(alice, "session", "update", "-f", file("s.yaml", "predecessor: "+hash+"\n"+svc("srv", "")))
	require.Equal(t, 0, code, stderr)
	require.Eventually(t, func() bool { n, _ := listeners(); return n == 0 }, 30*time.Second, 200*time.Millisecond,
		"the registration no longer configures the sidecar")
	metrics, err := e2etest.Get(ctx, "http://"+cp.metrics+"/metrics")
	require.NoError(t, err)
	assert.Positive(t, e2etest.Sample(metrics, `attestmesh_mesh_exclusions_total{reason="registrant_lost_rights"}`))
	assert.InDelta(t, 1, e2etest.Sample(metrics, `attestmesh_mesh_registrations{state="excluded"}`), 0)

	// The deputy can no longer replace it; alice deletes it.
	require.Error(t, dc.PutMesh(ctx, "rights", reg))
	code, out, stderr = run(alice, "mesh", "delete", "rights")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "mesh rights deleted\n", out)
}

func startBackground(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...) //nolint:noctx // stopped in cleanup
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("--- %s ---\n%s", args[0], out.String())
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
