package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	wantMREnclave = "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"
	wantMRSigner  = "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"
	day           = 24 * time.Hour
)

func TestVerifyValidQuote(t *testing.T) {
	v := loadVectors(t)
	id, err := Verify(v.quote, v.collateral(), Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true})
	require.NoError(t, err)
	assert.Equal(t, wantMREnclave, id.MREnclave.String())
	assert.Equal(t, wantMRSigner, id.MRSigner.String())
	assert.Equal(t, uint16(0), id.ISVProdID)
	assert.Equal(t, uint16(0), id.ISVSVN)
	assert.False(t, id.Debug)
	assert.Len(t, id.ReportData, 64)
	// The PCK certificate's TCB (components 7,9,3,3,255,255,1,0..., PCESVN 13) meets the first
	// level of the TCB Info; the QE (ISVSVN 9) is UpToDate, so nothing is folded in.
	assert.Equal(t, TCBSWHardeningNeeded, id.TCBStatus)
	assert.Equal(t, []string{"INTEL-SA-00615", "INTEL-SA-00657"}, id.AdvisoryIDs)
	assert.Equal(t, "00606A000000", id.FMSPC)

	out, err := json.Marshal(id)
	require.NoError(t, err)
	assert.Contains(t, string(out), `"mrenclave":"`+wantMREnclave+`"`)
	assert.Contains(t, string(out), `"tcb_status":"SWHardeningNeeded"`)
}

func TestVerifyKnownAnswers(t *testing.T) {
	v := loadVectors(t)
	otherRoot, _ := newTestCA(t)
	tests := []struct {
		name     string
		quote    []byte
		coll     func(*Collateral)
		opts     Options
		crls     bool // check revocation (the public vectors come without CRLs)
		wantErr  Reason
		contains string
	}{
		{
			name:     "valid, but no CRLs to check revocation with",
			opts:     Options{Now: time.Unix(validAt, 0)},
			crls:     true,
			wantErr:  ReasonCRL,
			contains: "dcap: root CA CRL: not present in the collateral (revocation cannot be checked)",
		},
		{
			name:    "valid at the reference time",
			opts:    Options{Now: time.Unix(validAt, 0)},
			wantErr: "",
		},
		{
			name:     "PCK certificate expired",
			opts:     Options{Now: time.Unix(pckExpiredAt, 0)},
			wantErr:  ReasonCertExpired,
			contains: `dcap: PCK certificate chain: PCK certificate "CN=Intel SGX PCK Certificate`,
		},
		{
			name:     "PCK certificate not yet valid",
			opts:     Options{Now: time.Unix(pckNotYetValidAt, 0)},
			wantErr:  ReasonCertNotYetValid,
			contains: "PCK certificate chain: PCK certificate",
		},
		{
			name:     "QE Identity issued in the future",
			opts:     Options{Now: time.Unix(qeIssuedAt-1, 0)},
			wantErr:  ReasonCollateralNotYetValid,
			contains: "QE Identity: issueDate 2022-12-16T12:45:36Z is in the future",
		},
		{
			name:     "QE Identity exactly at its issue date",
			opts:     Options{Now: time.Unix(qeIssuedAt, 0)},
			wantErr:  ReasonCollateralNotYetValid, // but now the TCB Info (issued 2022-12-19) is the one in the future
			contains: "TCB Info: issueDate 2022-12-19T09:40:10Z is in the future",
		},
		{
			// 30 days after issue plus one second: past both nextUpdate and a 30-day maximum age.
			name:     "QE Identity older than a 30-day maximum age",
			opts:     Options{Now: time.Unix(qeIssuedAt+30*86400+1, 0), CollateralMaxAge: 30 * day},
			wantErr:  ReasonCollateralExpired,
			contains: "QE Identity: expired: issued 2022-12-16T12:45:36Z, older than the maximum age 720h0m0s",
		},
		{
			// The same time with no maximum age: nextUpdate (2023-01-15T12:45:36Z) decides.
			name:     "QE Identity past its nextUpdate",
			opts:     Options{Now: time.Unix(qeIssuedAt+30*86400+1, 0)},
			wantErr:  ReasonCollateralExpired,
			contains: "QE Identity: expired: nextUpdate was 2023-01-15T12:45:36Z",
		},
		{
			// A 90-day maximum age replaces nextUpdate and accepts it.
			name:    "QE Identity within a 90-day maximum age",
			opts:    Options{Now: time.Unix(qeIssuedAt+30*86400+1, 0), CollateralMaxAge: 90 * day},
			wantErr: "",
		},
		{
			name:     "TCB Info older than a 90-day maximum age",
			opts:     Options{Now: time.Unix(qeIssuedAt+90*86400, 0), CollateralMaxAge: 90 * day},
			wantErr:  ReasonCollateralExpired,
			contains: "QE Identity: expired",
		},
		{
			name:     "bad TCB signing chain",
			coll:     func(c *Collateral) { c.TCBSignChain = v.badChain },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "QE Identity: signature does not verify with the TCB signing key",
		},
		{
			name:     "no TCB signing chain",
			coll:     func(c *Collateral) { c.TCBSignChain = nil },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "TCB signing chain: no PEM certificate found",
		},
		{
			name: "TCB signing chain without its root",
			coll: func(c *Collateral) {
				c.TCBSignChain = v.tcbChain[:bytes.Index(v.tcbChain, []byte("-----END CERTIFICATE-----"))+25]
			},
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "TCB signing chain: got 1 certificates",
		},
		{
			name:     "one byte changed in the signed TCB Info body",
			coll:     func(c *Collateral) { c.TCBInfo = replaceOnce(t, v.tcbInfo, `"tcbType":0`, `"tcbType":1`) },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "TCB Info: signature does not verify",
		},
		{
			name:     "one byte changed in the signed QE Identity body",
			coll:     func(c *Collateral) { c.QEIdentity = replaceOnce(t, v.qeIdentity, `"isvprodid":1`, `"isvprodid":2`) },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "QE Identity: signature does not verify",
		},
		{
			name:     "TCB Info signature changed",
			coll:     func(c *Collateral) { c.TCBInfo = replaceOnce(t, v.tcbInfo, `"signature":"00eb`, `"signature":"01eb`) },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonCollateralSignature,
			contains: "TCB Info: signature does not verify",
		},
		{
			name:     "QE Identity not JSON",
			coll:     func(c *Collateral) { c.QEIdentity = []byte("<html>") },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonMalformed,
			contains: "dcap: QE Identity: JSON",
		},
		{
			name:     "TCB Info and QE Identity swapped",
			coll:     func(c *Collateral) { c.TCBInfo, c.QEIdentity = c.QEIdentity, c.TCBInfo },
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonMalformed,
			contains: "QE Identity: body not present",
		},
		{
			name:     "encrypted PPID quote has no PCK chain",
			quote:    v.eppid,
			opts:     Options{Now: time.Unix(validAt, 0)},
			wantErr:  ReasonPCKChainMissing,
			contains: "dcap: quote: PCK certificate chain not present (certification data type 3, want 5)",
		},
		{
			name:     "another root",
			opts:     Options{Now: time.Unix(validAt, 0), Root: otherRoot},
			wantErr:  ReasonPCKChain,
			contains: `root certificate "CN=Intel SGX Root CA,O=Intel Corporation,L=Santa Clara,ST=CA,C=US" (serial`,
		},
		{
			name:     "no root",
			opts:     Options{Now: time.Unix(validAt, 0), Root: nil},
			wantErr:  ReasonConfig,
			contains: "Options.Root",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			quote := v.quote
			if tt.quote != nil {
				quote = tt.quote
			}
			c := v.collateral()
			if tt.coll != nil {
				tt.coll(&c)
			}
			opts := tt.opts
			if opts.Root == nil && tt.wantErr != ReasonConfig {
				opts.Root = IntelRoot()
			}
			opts.SkipRevocation = !tt.crls
			id, err := Verify(quote, c, opts)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, wantMREnclave, id.MREnclave.String())
				return
			}
			require.Error(t, err)
			assert.Nil(t, id)
			assert.Equal(t, tt.wantErr, ReasonOf(err), "error: %v", err)
			assert.Contains(t, err.Error(), tt.contains)
			assert.Regexp(t, "^dcap: ", err.Error())
		})
	}
}

// TestVerifyMutations changes one byte in each signed region of the real quote and checks
// that verification fails for the reason that region's check gives.
func TestVerifyMutations(t *testing.T) {
	v := loadVectors(t)
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	const sigStart = HeaderSize + ReportBodySize + 4
	var (
		offISVSig   = sigStart
		offAttKey   = offISVSig + ECDSASigSize
		offQEReport = offAttKey + ECDSAKeySize
		offQESig    = offQEReport + ReportBodySize
		offAuth     = offQESig + ECDSASigSize + 2
		offCertType = offAuth + len(q.Signature.QEAuthData)
		offCertData = offCertType + 2 + 4
	)
	require.NotEmpty(t, q.Signature.QEAuthData)
	// A byte in the middle of the leaf's base64 (its subject public key).
	leafKey := offCertData + bytes.Index(q.Signature.Certification.Data, []byte("-----BEGIN CERTIFICATE-----")) + 28 + 400

	tests := []struct {
		name   string
		offset int
		want   Reason
	}{
		{"header: QE SVN", 8, ReasonISVSignature},
		{"header: user data", 30, ReasonISVSignature},
		{"header: reserved", 5, ReasonISVSignature},
		{"header: version", 0, ReasonUnsupported},
		{"header: attestation key type", 2, ReasonUnsupported},
		{"ISV report body: CPUSVN", HeaderSize + offCPUSVN, ReasonISVSignature},
		{"ISV report body: attributes (DEBUG bit)", HeaderSize + offAttributes, ReasonISVSignature},
		{"ISV report body: MRENCLAVE", HeaderSize + offMREnclave + 31, ReasonISVSignature},
		{"ISV report body: MRSIGNER", HeaderSize + offMRSigner, ReasonISVSignature},
		{"ISV report body: reserved", HeaderSize + 200, ReasonISVSignature},
		{"ISV report body: REPORTDATA", HeaderSize + offReportData + 63, ReasonISVSignature},
		{"signature data length", HeaderSize + ReportBodySize, ReasonMalformed},
		{"ISV signature", offISVSig + 10, ReasonISVSignature},
		{"attestation key", offAttKey + 40, ReasonQEBinding},
		{"QE report: MRSIGNER", offQEReport + offMRSigner, ReasonQESignature},
		{"QE report: REPORTDATA", offQEReport + offReportData, ReasonQESignature},
		{"QE report signature", offQESig + 33, ReasonQESignature},
		{"QE authentication data", offAuth + 3, ReasonQEBinding},
		{"certification data type", offCertType, ReasonPCKChainMissing},
		{"PCK chain PEM: PCK certificate", leafKey, ReasonPCKChain},
		{"PCK chain PEM: header line", offCertData + 11, ReasonPCKChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := bytes.Clone(v.quote)
			m[tt.offset] ^= 0x01
			id, err := Verify(m, v.collateral(), Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true})
			require.Error(t, err)
			assert.Nil(t, id)
			assert.Equal(t, tt.want, ReasonOf(err), "error: %v", err)
		})
	}
}

func TestConvergeTCB(t *testing.T) {
	tests := []struct {
		platform, qe string
		want         string
		wantErr      Reason
	}{
		{TCBUpToDate, TCBUpToDate, TCBUpToDate, ""},
		{TCBSWHardeningNeeded, TCBUpToDate, TCBSWHardeningNeeded, ""},
		{TCBConfigurationNeeded, TCBUpToDate, TCBConfigurationNeeded, ""},
		{TCBOutOfDate, TCBUpToDate, TCBOutOfDate, ""},
		{TCBUpToDate, TCBOutOfDate, TCBOutOfDate, ""},
		{TCBSWHardeningNeeded, TCBOutOfDate, TCBOutOfDate, ""},
		{TCBConfigurationNeeded, TCBOutOfDate, TCBOutOfDateConfigurationNeeded, ""},
		{TCBConfigurationAndSWHardeningNeeded, TCBOutOfDate, TCBOutOfDateConfigurationNeeded, ""},
		{TCBOutOfDateConfigurationNeeded, TCBOutOfDate, TCBOutOfDateConfigurationNeeded, ""},
		{TCBRevoked, TCBUpToDate, "", ReasonTCBRevoked},
		{TCBUpToDate, TCBRevoked, "", ReasonTCBRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.platform+"/"+tt.qe, func(t *testing.T) {
			got, err := convergeTCB(tt.platform, tt.qe)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, tt.wantErr, ReasonOf(err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestPlatformLevel(t *testing.T) {
	v := loadVectors(t)
	info := realTCBInfo(t, v)
	base := PCKExtensions{
		TCBComponents: [16]int{7, 9, 3, 3, 255, 255, 1},
		PCESVN:        13,
		FMSPC:         [6]byte{0x00, 0x60, 0x6a, 0, 0, 0},
	}
	tests := []struct {
		name       string
		edit       func(*PCKExtensions)
		wantStatus string
		wantErr    Reason
	}{
		{"the quote's platform", func(*PCKExtensions) {}, TCBSWHardeningNeeded, ""},
		{"component 7 at 0 needs configuration", func(e *PCKExtensions) { e.TCBComponents[6] = 0 }, TCBConfigurationAndSWHardeningNeeded, ""},
		{"PCESVN 12", func(e *PCKExtensions) { e.PCESVN = 12 }, TCBOutOfDate, ""},
		{"microcode 4/4, PCESVN 10", func(e *PCKExtensions) { e.TCBComponents[0], e.TCBComponents[1], e.PCESVN = 4, 4, 10 }, TCBOutOfDate, ""},
		{"higher than every level", func(e *PCKExtensions) { e.TCBComponents[15], e.PCESVN = 200, 99 }, TCBSWHardeningNeeded, ""},
		{"below every level", func(e *PCKExtensions) { e.PCESVN = 4 }, "", ReasonTCBUnknown},
		{"other FMSPC", func(e *PCKExtensions) { e.FMSPC[5] = 1 }, "", ReasonTCBUnknown},
		{"other PCE ID", func(e *PCKExtensions) { e.PCEID[1] = 1 }, "", ReasonTCBUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext := base
			tt.edit(&ext)
			l, err := platformLevel(info, &ext)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, tt.wantErr, ReasonOf(err), "error: %v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantStatus, l.TCBStatus)
		})
	}
}

func TestMatchQE(t *testing.T) {
	v := loadVectors(t)
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	id := realQEIdentity(t, v)
	tests := []struct {
		name       string
		edit       func(*ReportBody)
		wantStatus string
		wantErr    Reason
		contains   string
	}{
		{"the quote's QE", func(*ReportBody) {}, TCBUpToDate, "", ""},
		{"ISVSVN 5", func(r *ReportBody) { r.ISVSVN = 5 }, TCBOutOfDate, "", ""},
		{"ISVSVN 3 falls to level 2", func(r *ReportBody) { r.ISVSVN = 3 }, TCBOutOfDate, "", ""},
		{"ISVSVN 0 is below every level", func(r *ReportBody) { r.ISVSVN = 0 }, "", ReasonTCBRevoked, "ISVSVN 0 is below every TCB level"},
		{"other MRSIGNER", func(r *ReportBody) { r.MRSigner[0] ^= 1 }, "", ReasonQEIdentity, "QE report: MRSIGNER: got 8d4f"},
		{"other ISVPRODID", func(r *ReportBody) { r.ISVProdID = 2 }, "", ReasonQEIdentity, "ISVPRODID: got 2, want 1"},
		{"DEBUG QE", func(r *ReportBody) { r.Attributes[0] |= AttributeDebug }, "", ReasonQEIdentity, "ATTRIBUTES"},
		{"masked-out attribute bit", func(r *ReportBody) { r.Attributes[0] |= 0x04; r.Attributes[8] = 0xff }, TCBUpToDate, "", ""},
		{"MISCSELECT bit", func(r *ReportBody) { r.MiscSelect = 1 }, "", ReasonQEIdentity, "MISCSELECT: got 01000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := q.Signature.QEReport
			tt.edit(&r)
			l, err := matchQE(id, &r)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, tt.wantErr, ReasonOf(err), "error: %v", err)
				assert.Contains(t, err.Error(), tt.contains)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantStatus, l.TCBStatus)
		})
	}
}

func TestCheckFresh(t *testing.T) {
	issue := time.Unix(1000*86400, 0)
	next := issue.Add(30 * day)
	tests := []struct {
		name   string
		now    time.Time
		maxAge time.Duration
		want   Reason
	}{
		{"before issue", issue.Add(-time.Second), 0, ReasonCollateralNotYetValid},
		{"at issue", issue, 0, ""},
		{"just before nextUpdate", next.Add(-time.Second), 0, ""},
		{"at nextUpdate", next, 0, ReasonCollateralExpired},
		{"max age shorter than nextUpdate", issue.Add(10 * day), 7 * day, ReasonCollateralExpired},
		{"max age longer than nextUpdate", next.Add(day), 90 * day, ""},
		{"at the end of the max age", issue.Add(90 * day), 90 * day, ReasonCollateralExpired},
		{"before issue with a max age", issue.Add(-time.Second), 90 * day, ReasonCollateralNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkFresh("TCB Info", issue, next, tt.now, tt.maxAge)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, ReasonOf(err))
		})
	}
	err := checkFresh("TCB Info", time.Time{}, next, issue, 0)
	assert.Equal(t, ReasonMalformed, ReasonOf(err))
	err = checkFresh("TCB Info", next, issue, next, 0)
	assert.Equal(t, ReasonMalformed, ReasonOf(err))
}

// TestSignCollateral signs collateral as attest/sim does and opens it as Verify does.
func TestSignCollateral(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	issue := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	info := &TCBInfo{
		ID: "SGX", Version: 3, IssueDate: issue, NextUpdate: issue.Add(30 * day), FMSPC: "00606A000000", PCEID: "0000",
		TCBLevels: []TCBLevel{{
			TCB:     TCBLevelTCB{SGXTCBComponents: make([]TCBComponent, 16), PCESVN: 1},
			TCBDate: issue, TCBStatus: TCBUpToDate,
		}},
	}
	doc, err := SignTCBInfo(info, key)
	require.NoError(t, err)
	assert.Contains(t, string(doc), `"issueDate":"2025-01-02T03:04:05Z"`)
	got, err := openTCBInfo(doc, &key.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, info, got)

	qe := &QEIdentity{
		ID: "QE", Version: 2, IssueDate: issue, NextUpdate: issue.Add(day),
		MiscSelect: "00000000", MiscSelectMask: "FFFFFFFF", MRSigner: wantMRSigner, ISVProdID: 1,
		TCBLevels: []QETCBLevel{{TCB: QETCB{ISVSVN: 2}, TCBDate: issue, TCBStatus: TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00001"}}},
	}
	doc, err = SignQEIdentity(qe, key)
	require.NoError(t, err)
	gotQE, err := openQEIdentity(doc, &key.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, qe, gotQE)

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = openQEIdentity(doc, &other.PublicKey)
	assert.Equal(t, ReasonCollateralSignature, ReasonOf(err))
	_, err = openTCBInfo(doc, &key.PublicKey)
	assert.Equal(t, ReasonMalformed, ReasonOf(err), "a QE Identity is not a TCB Info: %v", err)
}

func TestReasonOf(t *testing.T) {
	assert.Equal(t, Reason(""), ReasonOf(nil))
	assert.Equal(t, ReasonUnknown, ReasonOf(errors.New("other")))
	err := fail(ReasonQEBinding, "x: got %d", 1)
	assert.Equal(t, ReasonQEBinding, ReasonOf(err))
	wrapped := errors.Join(errors.New("context"), err)
	assert.Equal(t, ReasonQEBinding, ReasonOf(wrapped))
	assert.EqualError(t, err, "dcap: x: got 1")
}

func TestHexBytesJSON(t *testing.T) {
	out, err := json.Marshal(struct{ B HexBytes }{HexBytes{0xAB, 0x01}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"B":"ab01"}`, string(out))
	var back struct{ B HexBytes }
	require.NoError(t, json.Unmarshal([]byte(`{"B":"AB01"}`), &back))
	assert.Equal(t, HexBytes{0xab, 0x01}, back.B)
	require.Error(t, json.Unmarshal([]byte(`{"B":"xyz"}`), &back))
}

func replaceOnce(t *testing.T, b []byte, old, repl string) []byte {
	t.Helper()
	require.Equal(t, 1, bytes.Count(b, []byte(old)), "%q must occur once", old)
	require.Len(t, repl, len(old))
	return bytes.Replace(b, []byte(old), []byte(repl), 1)
}

func realTCBInfo(t *testing.T, v *vectors) *TCBInfo {
	t.Helper()
	var signed SignedTCBInfo
	require.NoError(t, json.Unmarshal(v.tcbInfo, &signed))
	var info TCBInfo
	require.NoError(t, json.Unmarshal(signed.TCBInfo, &info))
	return &info
}

func realQEIdentity(t *testing.T, v *vectors) *QEIdentity {
	t.Helper()
	var signed SignedQEIdentity
	require.NoError(t, json.Unmarshal(v.qeIdentity, &signed))
	var id QEIdentity
	require.NoError(t, json.Unmarshal(signed.EnclaveIdentity, &id))
	return &id
}

// newTestCA makes a self-signed P-256 CA with the Intel root's subject, so that only its key
// tells it apart.
func newTestCA(tb testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject: pkix.Name{
			CommonName: "Intel SGX Root CA", Organization: []string{"Intel Corporation"},
			Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"},
		},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Unix(1<<33, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(tb, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return c, key
}
