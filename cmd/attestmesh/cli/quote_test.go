package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

// vectorDir holds the real Intel SGX DCAP vectors, shared by the project, not copied here.
const vectorDir = "../../../../shared/testdata/sgx-dcap"

func TestQuoteVerify(t *testing.T) {
	if _, err := os.Stat(vectorDir); err != nil {
		t.Skipf("real SGX DCAP vectors not available at %s (%v): skipping", vectorDir, err)
	}
	file := func(name string) string { return filepath.Join(vectorDir, name) }
	base := []string{
		"quote", "verify",
		"--quote", file("quote_v3_ecdsa_p256_pck_chain.bin"),
		"--tcb-info", file("tcb_info_v3_fmspc_00606A000000.json"),
		"--tcb-chain", file("tcb_info_v3_fmspc_00606A000000_certs.pem"),
		"--qe-identity", file("qe_identity_v2.json"),
		// The public vectors come without Intel's CRLs.
		"--no-revocation-check",
	}
	tests := []struct {
		name      string
		extra     []string
		wantCode  int
		wantOut   string
		wantInErr []string
	}{
		{
			name:     "valid at the reference time",
			extra:    []string{"--at", "1671497404"},
			wantCode: 0,
			wantOut:  "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f",
		},
		{
			name:     "valid with the root given explicitly",
			extra:    []string{"--at", "1671497404", "--root", file("intel_sgx_root_ca.pem")},
			wantCode: 0,
			wantOut:  "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f",
		},
		{
			name:      "PCK certificate expired",
			extra:     []string{"--at", "1891163522"},
			wantCode:  1,
			wantInErr: []string{"attestmesh: quote verify: dcap: PCK certificate chain: PCK certificate", "expired at 2029-12-05T11:12:01Z"},
		},
		{
			name:      "QE Identity past a 30-day maximum age",
			extra:     []string{"--at", "1673786737", "--collateral-max-age", "720h"},
			wantCode:  1,
			wantInErr: []string{"attestmesh: quote verify: dcap: QE Identity: expired"},
		},
		{
			name:      "root that is not a CA file",
			extra:     []string{"--at", "1671497404", "--root", file("qe_identity_v2.json")},
			wantCode:  1,
			wantInErr: []string{"attestmesh: quote verify: --root: dcap: root CA:"},
		},
		{
			name:      "missing quote file",
			extra:     []string{"--at", "1671497404", "--quote", file("nonexistent.bin")},
			wantCode:  1,
			wantInErr: []string{"attestmesh: quote verify: --quote: open"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Run(t.Context(), append(append([]string{}, base...), tt.extra...), &stdout, &stderr)
			assert.Equal(t, tt.wantCode, code, "stderr: %s", stderr.String())
			if tt.wantCode == 0 {
				var got struct {
					MREnclave  string `json:"mrenclave"`
					MRSigner   string `json:"mrsigner"`
					TCBStatus  string `json:"tcb_status"`
					Revocation string `json:"revocation"`
				}
				require.NoError(t, json.Unmarshal(stdout.Bytes(), &got), "stdout: %s", stdout.String())
				assert.Equal(t, tt.wantOut, got.MREnclave)
				assert.Equal(t, "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a", got.MRSigner)
				assert.Equal(t, "SWHardeningNeeded", got.TCBStatus)
				assert.Equal(t, "not checked", got.Revocation)
				assert.Contains(t, stderr.String(), "WARNING: revocation not checked")
				return
			}
			assert.Empty(t, stdout.String())
			for _, s := range tt.wantInErr {
				assert.Contains(t, stderr.String(), s)
			}
		})
	}
}

// The revocation check, on simulated quotes (the same verifier; only the root differs): a
// platform whose PCK certificate its CA revoked is refused for that reason, and CRLs are
// required unless --no-revocation-check says otherwise.
func TestQuoteVerifyRevocation(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	args := func(prefix string, revoked bool) []string {
		p, err := sim.NewPlatform(rand.Reader, sim.PlatformOptions{RevokedPCK: revoked})
		require.NoError(t, err)
		q, err := p.Quote(sim.Report{MREnclave: [32]byte{1}})
		require.NoError(t, err)
		c, err := p.Collateral(time.Now())
		require.NoError(t, err)
		return []string{"quote", "verify",
			"--quote", write(prefix+"quote.bin", q), "--tcb-info", write(prefix+"tcb.json", c.TCBInfo),
			"--tcb-chain", write(prefix+"chain.pem", c.TCBSignChain), "--qe-identity", write(prefix+"qe.json", c.QEIdentity),
			"--root", write(prefix+"root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Root().Raw})),
			"--pck-crl", write(prefix+"pck.crl", c.PCKCRL), "--root-ca-crl", write(prefix+"root.crl", c.RootCACRL)}
	}
	run := func(a ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := cli.Run(t.Context(), a, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	good, revoked := args("good-", false), args("revoked-", true)

	code, out, errOut := run(good...)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"revocation": "checked"`)

	code, _, errOut = run(revoked...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "is revoked by the PCK CA CRL")

	code, _, errOut = run(revoked[:len(revoked)-4]...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "revocation needs --pck-crl and --root-ca-crl")

	code, _, errOut = run(append(slices.Clone(revoked), "--no-revocation-check")...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "give the CRLs, or skip revocation, not both")
}

func TestQuoteVerifyRequiresFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := cli.Run(t.Context(), []string{"quote", "verify", "--at", "1"}, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), `required flag(s) "qe-identity", "quote", "tcb-chain", "tcb-info" not set`)
}

func TestMeasureCLIEqualsSha256sum(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "prog")
	require.NoError(t, os.WriteFile(bin, []byte("binary bytes"), 0o600))
	var stdout, stderr bytes.Buffer
	code := cli.Run(context.Background(), []string{"measure", bin}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	// SHA-256("binary bytes")
	sum := sha256.Sum256([]byte("binary bytes"))
	assert.Equal(t, hex.EncodeToString(sum[:])+"\n", stdout.String())
}
