package sim

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
)

// These tests run the simulated quotes through the real verifier, unchanged.

func TestQuoteVerifiesWithDCAP(t *testing.T) {
	p := testPlatform(t)
	now := time.Now()
	c, err := p.Collateral(now)
	require.NoError(t, err)
	tests := []struct {
		name string
		r    Report
	}{
		{"production", Report{
			MREnclave: sha256.Sum256([]byte("flask")), MRSigner: sha256.Sum256([]byte("signer")),
			ISVProdID: 1, ISVSVN: 2, ReportData: attestapi.BindReportData([]byte("spki"), [32]byte{7}),
		}},
		{"debug", Report{MREnclave: [32]byte{1}, MRSigner: [32]byte{2}, ISVProdID: 0xffff, ISVSVN: 0xffff, Debug: true}},
		{"zero", Report{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := p.Quote(tt.r)
			require.NoError(t, err)
			id, err := dcap.Verify(q, c, dcap.Options{Root: p.Root(), Now: now, CollateralMaxAge: time.Hour})
			require.NoError(t, err)
			assert.Equal(t, dcap.HexBytes(tt.r.MREnclave[:]), id.MREnclave)
			assert.Equal(t, dcap.HexBytes(tt.r.MRSigner[:]), id.MRSigner)
			assert.Equal(t, tt.r.ISVProdID, id.ISVProdID)
			assert.Equal(t, tt.r.ISVSVN, id.ISVSVN)
			assert.Equal(t, tt.r.Debug, id.Debug)
			assert.Equal(t, dcap.HexBytes(tt.r.ReportData[:]), id.ReportData)
			assert.Equal(t, dcap.TCBUpToDate, id.TCBStatus)
			assert.Empty(t, id.AdvisoryIDs)
			assert.Equal(t, "00514D000000", id.FMSPC)
		})
	}
}

func TestQuoteTCBStatusThroughDCAP(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		opts   PlatformOptions
		status string
		adv    []string
	}{
		{"out of date", PlatformOptions{TCBStatus: dcap.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00586", "INTEL-SA-00614"}},
			dcap.TCBOutOfDate, []string{"INTEL-SA-00586", "INTEL-SA-00614"}},
		{"sw hardening needed", PlatformOptions{TCBStatus: dcap.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-00615"}},
			dcap.TCBSWHardeningNeeded, []string{"INTEL-SA-00615"}},
		{"configuration needed", PlatformOptions{TCBStatus: dcap.TCBConfigurationNeeded}, dcap.TCBConfigurationNeeded, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlatform(t, tt.opts)
			c, err := p.Collateral(now)
			require.NoError(t, err)
			q, err := p.Quote(Report{MREnclave: [32]byte{3}})
			require.NoError(t, err)
			id, err := dcap.Verify(q, c, dcap.Options{Root: p.Root(), Now: now})
			require.NoError(t, err)
			assert.Equal(t, tt.status, id.TCBStatus)
			assert.Equal(t, tt.adv, id.AdvisoryIDs)
		})
	}
}

func TestQuoteRefusedByDCAP(t *testing.T) {
	a := testPlatform(t)
	b := newPlatform(t, PlatformOptions{})
	now := time.Now()
	ca, err := a.Collateral(now)
	require.NoError(t, err)
	cb, err := b.Collateral(now)
	require.NoError(t, err)
	qa, err := a.Quote(Report{MREnclave: [32]byte{1}})
	require.NoError(t, err)

	tests := []struct {
		name   string
		c      dcap.Collateral
		opts   dcap.Options
		reason dcap.Reason
	}{
		{"Intel root", ca, dcap.Options{Root: dcap.IntelRoot(), Now: now}, dcap.ReasonPCKChain},
		{"other platform's root", ca, dcap.Options{Root: b.Root(), Now: now}, dcap.ReasonPCKChain},
		{"other platform's collateral", cb, dcap.Options{Root: a.Root(), Now: now}, dcap.ReasonCollateralSignature},
		{"collateral expired", ca, dcap.Options{Root: a.Root(), Now: now.Add(31 * 24 * time.Hour)}, dcap.ReasonCollateralExpired},
		{"collateral not yet issued", ca, dcap.Options{Root: a.Root(), Now: now.Add(-2 * time.Minute)}, dcap.ReasonCollateralNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dcap.Verify(qa, tt.c, tt.opts)
			require.Error(t, err)
			assert.Equal(t, tt.reason, dcap.ReasonOf(err), "%v", err)
		})
	}
}

// TestQuoteFailsAgainstIntelRootFile pins the real Intel SGX Root CA from the shared test
// vectors, as a hardware-only session would.
func TestQuoteFailsAgainstIntelRootFile(t *testing.T) {
	pemBytes, err := os.ReadFile("../../../shared/testdata/sgx-dcap/intel_sgx_root_ca.pem")
	if os.IsNotExist(err) {
		t.Skip("../shared/testdata/sgx-dcap is absent: the Intel root file is not here (TestQuoteRefusedByDCAP uses dcap's embedded copy)")
	}
	require.NoError(t, err)
	intel, err := dcap.LoadRoot(pemBytes)
	require.NoError(t, err)
	p := testPlatform(t)
	c, err := p.Collateral(time.Now())
	require.NoError(t, err)
	q, err := p.Quote(Report{})
	require.NoError(t, err)

	_, err = dcap.Verify(q, c, dcap.Options{Root: intel})
	require.Error(t, err)
	assert.Equal(t, dcap.ReasonPCKChain, dcap.ReasonOf(err))
	assert.Contains(t, err.Error(), "PCK certificate chain")

	_, err = dcap.Verify(q, c, dcap.Options{Root: p.Root()})
	require.NoError(t, err, "the same quote passes against the simulated root")
}

func TestUnmarshalledPlatformQuotesVerify(t *testing.T) {
	p := testPlatform(t)
	data, err := p.Marshal()
	require.NoError(t, err)
	q, err := UnmarshalPlatform(data)
	require.NoError(t, err)
	quote, err := q.Quote(Report{MREnclave: [32]byte{5}})
	require.NoError(t, err)
	c, err := p.Collateral(time.Now()) // the original's collateral verifies the copy's quote
	require.NoError(t, err)
	id, err := dcap.Verify(quote, c, dcap.Options{Root: p.Root()})
	require.NoError(t, err)
	assert.Equal(t, dcap.HexBytes((&[32]byte{5})[:]), id.MREnclave)
}

// A platform whose PCK certificate its CA revoked: the verifier refuses its quotes for that
// reason, and accepts them only when told to skip revocation.
func TestRevokedPCKRefused(t *testing.T) {
	p := newPlatform(t, PlatformOptions{RevokedPCK: true})
	now := time.Now()
	c, err := p.Collateral(now)
	require.NoError(t, err)
	q, err := p.Quote(Report{MREnclave: [32]byte{1}})
	require.NoError(t, err)
	_, err = dcap.Verify(q, c, dcap.Options{Root: p.Root(), Now: now})
	require.Error(t, err)
	assert.Equal(t, dcap.ReasonCertRevoked, dcap.ReasonOf(err))
	assert.Contains(t, err.Error(), `PCK certificate chain: PCK certificate "CN=attestmesh simulated SGX PCK Certificate`)
	assert.Contains(t, err.Error(), "is revoked by the PCK CA CRL since")

	_, err = dcap.Verify(q, c, dcap.Options{Root: p.Root(), Now: now, SkipRevocation: true})
	require.NoError(t, err)
}
