package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

// signedBody returns the raw bytes of the signed member and checks the signature with key.
func signedBody(t *testing.T, doc []byte, field string, key *ecdsa.PublicKey) []byte {
	t.Helper()
	var outer map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &outer))
	require.Len(t, outer, 2)
	body := outer[field]
	require.NotEmpty(t, body)
	// The signed bytes are exactly those between `{"field":` and `,"signature"`.
	prefix := []byte(`{"` + field + `":`)
	require.True(t, bytes.HasPrefix(doc, prefix))
	assert.Equal(t, []byte(body), doc[len(prefix):len(prefix)+len(body)])
	var sigHex string
	require.NoError(t, json.Unmarshal(outer["signature"], &sigHex))
	sig, err := hex.DecodeString(sigHex)
	require.NoError(t, err)
	require.Len(t, sig, 64)
	assert.True(t, verifyRaw(t, key, body, sig), "%s signature", field)
	return body
}

func TestCollateral(t *testing.T) {
	now := time.Date(2026, 5, 4, 10, 30, 15, 0, time.UTC)
	tests := []struct {
		name       string
		opts       PlatformOptions
		wantStatus []string // statuses of the levels, newest first
		ownLevel   int
		advisories []string
	}{
		{"up to date", PlatformOptions{}, []string{dcap.TCBUpToDate, dcap.TCBOutOfDate}, 0, nil},
		{"out of date", PlatformOptions{TCBStatus: dcap.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00586", "INTEL-SA-00614"}},
			[]string{dcap.TCBUpToDate, dcap.TCBOutOfDate, dcap.TCBOutOfDate}, 1, []string{"INTEL-SA-00586", "INTEL-SA-00614"}},
		{"sw hardening", PlatformOptions{TCBStatus: dcap.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-00615"}},
			[]string{dcap.TCBSWHardeningNeeded, dcap.TCBOutOfDate}, 0, []string{"INTEL-SA-00615"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlatform(t, tt.opts)
			c, err := p.Collateral(now)
			require.NoError(t, err)

			var chain []*x509.Certificate
			rest := c.TCBSignChain
			for {
				b, r := pem.Decode(rest)
				if b == nil {
					break
				}
				cert, err := x509.ParseCertificate(b.Bytes)
				require.NoError(t, err)
				chain, rest = append(chain, cert), r
			}
			require.Len(t, chain, 2)
			assert.True(t, chain[1].Equal(p.Root()))
			require.NoError(t, chain[0].CheckSignatureFrom(p.Root()))
			key, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
			require.True(t, ok)

			var info tcbInfoBody
			require.NoError(t, json.Unmarshal(signedBody(t, c.TCBInfo, "tcbInfo", key), &info))
			assert.Equal(t, "SGX", info.ID)
			assert.Equal(t, 3, info.Version)
			assert.Equal(t, "2026-05-04T10:29:15Z", info.IssueDate)
			assert.Equal(t, "2026-06-03T10:30:15Z", info.NextUpdate)
			assert.Equal(t, strings.ToUpper(hex.EncodeToString(p.ext.FMSPC[:])), info.FMSPC)
			assert.Equal(t, "0000", info.PCEID)
			statuses := make([]string, 0, len(info.TCBLevels))
			for _, l := range info.TCBLevels {
				require.Len(t, l.TCB.SGXTCBComponents, 16)
				statuses = append(statuses, l.TCBStatus)
			}
			assert.Equal(t, tt.wantStatus, statuses)
			own := info.TCBLevels[tt.ownLevel]
			assert.Equal(t, int(p.ext.PCESVN), own.TCB.PCESVN)
			assert.Equal(t, components(p.ext.CPUSVN), own.TCB.SGXTCBComponents)
			assert.Equal(t, tt.advisories, own.AdvisoryIDs)
			for _, newer := range info.TCBLevels[:tt.ownLevel] {
				assert.Greater(t, newer.TCB.PCESVN, own.TCB.PCESVN, "a newer level is above the platform")
			}

			var qe qeIdentityBody
			require.NoError(t, json.Unmarshal(signedBody(t, c.QEIdentity, "enclaveIdentity", key), &qe))
			assert.Equal(t, "QE", qe.ID)
			assert.Equal(t, 2, qe.Version)
			assert.Equal(t, info.IssueDate, qe.IssueDate)
			assert.Equal(t, strings.ToUpper(hex.EncodeToString(QEMRSigner[:])), qe.MRSigner)
			assert.Equal(t, "11000000000000000000000000000000", qe.Attributes)
			assert.Equal(t, QEISVProdID, qe.ISVProdID)
			require.Len(t, qe.TCBLevels, 1)
			assert.Equal(t, QEISVSVN, qe.TCBLevels[0].TCB.ISVSVN)
		})
	}
}

// TestCollateralShapeMatchesIntel compares the key sets of the simulated documents with the
// real PCS documents.
func TestCollateralShapeMatchesIntel(t *testing.T) {
	dir := "../../../shared/testdata/sgx-dcap/"
	realInfo, err := os.ReadFile(dir + "tcb_info_v3_fmspc_00606A000000.json")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is absent: no real collateral to compare with", dir)
	}
	require.NoError(t, err)
	realQE, err := os.ReadFile(dir + "qe_identity_v2.json")
	require.NoError(t, err)
	c, err := testPlatform(t).Collateral(time.Now())
	require.NoError(t, err)

	keys := func(doc []byte, field string) []string {
		var m map[string]json.RawMessage
		var top map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(doc, &top))
		require.NoError(t, json.Unmarshal(top[field], &m))
		out := make([]string, 0, len(m))
		for k := range m {
			out = append(out, k)
		}
		return out
	}
	assert.ElementsMatch(t, keys(realInfo, "tcbInfo"), keys(c.TCBInfo, "tcbInfo"))
	assert.ElementsMatch(t, keys(realQE, "enclaveIdentity"), keys(c.QEIdentity, "enclaveIdentity"))
}
