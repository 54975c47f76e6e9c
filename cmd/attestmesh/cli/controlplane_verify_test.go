package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
)

var cpMR = [32]byte{0xc0, 0xff, 0xee}

// attestedMgmt runs a real management API whose evidence comes from a simulated platform
// quoting cpMR for the API's own CA; it returns the server, its address and the platform.
func attestedMgmt(t *testing.T) (*mgmttest.Server, string, *sim.Platform) {
	t.Helper()
	platform, err := sim.NewPlatform(nil, sim.PlatformOptions{})
	require.NoError(t, err)
	var iss *evidence.Issuer
	srv := mgmttest.StartWith(t, func(c *mgmt.Config) {
		c.Evidence = func(ctx context.Context, nonce [32]byte) ([]byte, error) { return iss.Issue(ctx, nonce) }
	})
	iss, err = evidence.NewIssuer(evidence.IssuerConfig{
		TEE: attestapi.TEESimulation, CA: srv.Authority.Bundle()[0], SimulatedRoot: platform.Root(),
		Quoter: evidence.QuoterFunc(func(_ context.Context, rd [64]byte) ([]byte, error) {
			return platform.Quote(sim.Report{MREnclave: cpMR, ReportData: rd})
		}),
		Collateral: func(now time.Time) (dcap.Collateral, error) { return platform.Collateral(now) },
	})
	require.NoError(t, err)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	return srv, u.Host, platform
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestControlPlaneVerifyThenPin: verify writes the attested CA, and the session commands work
// with it pinned.
func TestControlPlaneVerifyThenPin(t *testing.T) {
	srv, addr, _ := attestedMgmt(t)
	out := filepath.Join(t.TempDir(), "ca.pem")
	code, stdout, stderr := runCLI("controlplane", "verify", "--addr", addr, "--simulation", "--mrenclave", hex.EncodeToString(cpMR[:]), "--out", out)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "control plane at "+addr+" attested (simulation)")
	assert.Contains(t, stdout, "mrenclave   "+hex.EncodeToString(cpMR[:])+" (as expected)")
	assert.Contains(t, stdout, "reportdata  binds that CA's public key and this request's nonce")
	assert.Contains(t, stdout, "root        simulated, sent by the control plane itself")
	assert.Contains(t, stdout, "wrote the attested CA bundle to "+out)
	assert.Contains(t, stderr, "WARNING: SIMULATION")
	assert.Contains(t, stderr, "pin it with --simulated-root FILE")
	pinned, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, srv.Authority.BundlePEM(), pinned)

	doc := filepath.Join(t.TempDir(), "s.yaml")
	require.NoError(t, os.WriteFile(doc, []byte("name: pinned\nversion: \"0.3\"\n"), 0o600))
	code, stdout, stderr = runCLI("session", "create", "-f", doc, "--controlplane", srv.URL, "--ca-file", out, "--identity-dir", t.TempDir())
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "pinned")
}

func TestControlPlaneVerifyRefuses(t *testing.T) {
	_, addr, platform := attestedMgmt(t)
	dir := t.TempDir()
	otherRoot := filepath.Join(dir, "other-root.pem")
	p2, err := sim.NewPlatform(nil, sim.PlatformOptions{})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(otherRoot, ca.MarshalCertsPEM(p2.Root()), 0o600))
	ownRoot := filepath.Join(dir, "root.pem")
	require.NoError(t, os.WriteFile(ownRoot, ca.MarshalCertsPEM(platform.Root()), 0o600))
	good := hex.EncodeToString(cpMR[:])
	other := "ab" + good[2:]
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"another binary", []string{"--simulation", "--mrenclave", other},
			1, "attestmesh: controlplane verify: refused: evidence: the control plane's measurement differs: expected MRENCLAVE " + other + ", got " + good},
		{"hardware asked", []string{"--collateral", dir, "--mrenclave", good},
			1, "refused: evidence: the control plane presented simulated evidence, but hardware (sgx) evidence was required"},
		{"another simulated root pinned", []string{"--simulation", "--simulated-root", otherRoot, "--mrenclave", good},
			1, "refused: evidence: the simulated root differs from the pinned one"},
		{"own simulated root pinned", []string{"--simulation", "--simulated-root", ownRoot, "--mrenclave", good}, 0, ""},
		{"both modes", []string{"--simulation", "--collateral", dir, "--mrenclave", good},
			1, "give exactly one of --collateral DIR (hardware) and --simulation"},
		{"no mode", []string{"--mrenclave", good}, 1, "give exactly one of --collateral DIR (hardware) and --simulation"},
		{"root without simulation", []string{"--collateral", dir, "--simulated-root", ownRoot, "--mrenclave", good},
			1, "--simulated-root goes with --simulation"},
		{"bad measurement", []string{"--simulation", "--mrenclave", "xyz"}, 1, `--mrenclave "xyz": want 64 hex digits`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ca.pem")
			code, _, stderr := runCLI(append([]string{"controlplane", "verify", "--addr", addr, "--out", out}, tt.args...)...)
			assert.Equal(t, tt.code, code, stderr)
			assert.Contains(t, stderr, tt.want)
			if tt.code != 0 {
				assert.NoFileExists(t, out, "nothing is written on a refusal")
			}
		})
	}
}

// TestControlPlaneVerifyHardwareVector: a server presenting the real SGX v3 quote (an
// unrelated enclave's) as its evidence. The vectors come without Intel's CRLs, and verify
// reads --collateral as the control plane reads --collateral-dir, CRLs required: it refuses,
// saying so. (evidence's TestHardwareVector goes on, without revocation, to the REPORTDATA
// refusal.)
func TestControlPlaneVerifyHardwareVector(t *testing.T) {
	if _, err := os.Stat(vectorDir); err != nil {
		t.Skipf("real SGX DCAP vectors not available at %s (%v): skipping", vectorDir, err)
	}
	quote, err := os.ReadFile(filepath.Join(vectorDir, "quote_v3_ecdsa_p256_pck_chain.bin"))
	require.NoError(t, err)
	authority, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("attestmesh.local")})
	require.NoError(t, err)
	body, err := (&evidence.Evidence{TEE: attestapi.TEESGX, Quote: quote, CA: authority.Bundle()[0]}).Marshal()
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cert, err := authority.IssueServerCert(key.Public(), nil, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	coll := t.TempDir()
	for dst, src := range map[string]string{
		"tcb_info_00606A000000.json": "tcb_info_v3_fmspc_00606A000000.json", "qe_identity.json": "qe_identity_v2.json",
		"tcb_chain.pem": "tcb_info_v3_fmspc_00606A000000_certs.pem",
	} {
		b, err := os.ReadFile(filepath.Join(vectorDir, src))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(coll, dst), b, 0o600))
	}
	out := filepath.Join(t.TempDir(), "ca.pem")
	code, _, stderr := runCLI("controlplane", "verify", "--addr", srv.Listener.Addr().String(), "--collateral", coll,
		"--mrenclave", "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f", "--out", out)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "refused: evidence: collateral for the control plane's platform (FMSPC 00606A000000): "+
		"attestation: collateral: none of pck_crl.der, pck_crl.pem in "+coll+": revocation cannot be checked")
	assert.NoFileExists(t, out)
}
