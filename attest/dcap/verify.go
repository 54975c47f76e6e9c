package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"fmt"
	"time"
)

var (
	pckChainSpec = chainSpec{
		name:   "PCK certificate chain",
		roles:  []string{"PCK certificate", "PCK intermediate CA certificate"},
		reason: ReasonPCKChain,
	}
	tcbChain = chainSpec{
		name:   "TCB signing chain",
		roles:  []string{"TCB signing certificate", "intermediate CA certificate"},
		reason: ReasonCollateralSignature,
	}
)

// Verify verifies a version 3 ECDSA-P256 quote with its collateral against opts.Root and
// returns the enclave's verified identity. The steps, each failing with an *Error whose
// Reason says which:
//
//  1. parse the quote (ParseQuote);
//  2. the PCK certificate chain inside the quote (certification data type 5) ends in exactly
//     opts.Root, every certificate is valid at opts.Now and the signatures chain;
//  3. the QE report is signed by the PCK certificate's key;
//  4. the QE report's REPORTDATA is SHA-256(attestation key || QE authentication data)
//     followed by 32 zero bytes;
//  5. the ISV signature over SHA-256(header || ISV report body) verifies with the
//     attestation key;
//  6. the TCB signing chain ends in opts.Root and is valid at opts.Now, and it signs the QE
//     Identity and the TCB Info, both fresh (see Options.CollateralMaxAge);
//     6a. unless Options.SkipRevocation, the root CA's CRL (signed by the root, current) revokes
//     neither the PCK certificate's CA nor the TCB signing certificate, and the PCK CA's CRL
//     (signed by that CA, current) does not revoke the PCK certificate;
//  7. the QE report matches the QE Identity (MRSIGNER, ISVPRODID, masked MISCSELECT and
//     ATTRIBUTES) and its ISVSVN gives the QE's TCB status;
//  8. the PCK certificate's FMSPC and PCE ID match the TCB Info, and its TCB (16 component
//     SVNs, PCESVN) selects the first TCB level at or below it, giving the platform's TCB
//     status and advisories; the QE's status is folded in as Intel's QVL does.
//
// Any TCB status other than Revoked is returned in Identity.TCBStatus for policy to judge.
func Verify(quote []byte, c Collateral, opts Options) (*Identity, error) {
	if opts.Root == nil {
		return nil, fail(ReasonConfig, "Options.Root: no root CA given (use IntelRoot() for hardware quotes)")
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	rq, err := parseQuote(quote)
	if err != nil {
		return nil, err
	}
	q := rq.quote
	sig := &q.Signature

	// The PCK chain.
	if sig.Certification.Type != CertDataPCKChain {
		return nil, fail(ReasonPCKChainMissing, "quote: PCK certificate chain not present (certification data type %d, want %d); "+
			"such a quote can only be verified with the PCK certificate fetched from Intel PCS", sig.Certification.Type, CertDataPCKChain)
	}
	certs, keepCerts, err := parsePEMChainCached(sig.Certification.Data)
	if err != nil {
		return nil, fail(ReasonPCKChain, "quote: PCK certificate chain: %v", err)
	}
	pck, err := verifyChain(certs, opts.Root, now, pckChainSpec)
	if err != nil {
		return nil, err
	}
	keepCerts()
	pckKey, ok := p256Key(pck)
	if !ok {
		return nil, fail(ReasonPCKChain, "PCK certificate chain: PCK certificate %q: public key is %T, want ECDSA P-256", pck.Subject, pck.PublicKey)
	}

	// The QE report, signed by the PCK key, binds the attestation key.
	if !verifyRawCached(pckKey, rq.qeReport, sig.QEReportSignature[:]) {
		return nil, fail(ReasonQESignature, "quote: QE report signature does not verify with the PCK certificate's key")
	}
	bind := sha256.New()
	bind.Write(sig.AttestationKey[:])
	bind.Write(sig.QEAuthData)
	want := make([]byte, 64)
	copy(want, bind.Sum(nil))
	if got := sig.QEReport.ReportData[:]; !bytes.Equal(got, want) {
		return nil, fail(ReasonQEBinding, "quote: QE report REPORTDATA: got %x, want SHA-256(attestation key || QE authentication data) || 32 zero bytes = %x", got, want)
	}

	// The enclave's report, signed by the attestation key.
	attKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, sig.AttestationKey[:]...))
	if err != nil {
		return nil, fail(ReasonISVSignature, "quote: attestation key: not a P-256 point: %v", err)
	}
	if !verifyRaw(attKey, rq.headerBody, sig.ISVSignature[:]) {
		return nil, fail(ReasonISVSignature, "quote: ISV report signature over header and report body does not verify with the attestation key")
	}

	// The collateral.
	tcbCerts, keepTCBCerts, err := parsePEMChainCached(c.TCBSignChain)
	if err != nil {
		return nil, fail(ReasonCollateralSignature, "TCB signing chain: %v", err)
	}
	tcbCert, err := verifyChain(tcbCerts, opts.Root, now, tcbChain)
	if err != nil {
		return nil, err
	}
	keepTCBCerts()
	tcbKey, ok := p256Key(tcbCert)
	if !ok {
		return nil, fail(ReasonCollateralSignature, "TCB signing chain: TCB signing certificate %q: public key is %T, want ECDSA P-256", tcbCert.Subject, tcbCert.PublicKey)
	}
	if !opts.SkipRevocation {
		if err := checkRevocation(c, certs, tcbCert, opts.Root, now); err != nil {
			return nil, err
		}
	}
	qeID, err := openCached("qe-identity", c.QEIdentity, tcbKey, openQEIdentity)
	if err != nil {
		return nil, err
	}
	if err := checkFresh("QE Identity", qeID.IssueDate, qeID.NextUpdate, now, opts.CollateralMaxAge); err != nil {
		return nil, err
	}
	tcbInfo, err := openCached("tcb-info", c.TCBInfo, tcbKey, openTCBInfo)
	if err != nil {
		return nil, err
	}
	if err := checkFresh("TCB Info", tcbInfo.IssueDate, tcbInfo.NextUpdate, now, opts.CollateralMaxAge); err != nil {
		return nil, err
	}

	// The QE against its identity, the platform against its TCB levels.
	qeLevel, err := matchQE(qeID, &sig.QEReport)
	if err != nil {
		return nil, err
	}
	ext, err := pckExtensionsCached(pck)
	if err != nil {
		return nil, &Error{Reason: ReasonPCKChain, Err: err}
	}
	level, err := platformLevel(tcbInfo, ext)
	if err != nil {
		return nil, err
	}
	status, err := convergeTCB(level.TCBStatus, qeLevel.TCBStatus)
	if err != nil {
		return nil, err
	}

	body := &q.Body
	return &Identity{
		MREnclave:   HexBytes(body.MREnclave[:]),
		MRSigner:    HexBytes(body.MRSigner[:]),
		ISVProdID:   body.ISVProdID,
		ISVSVN:      body.ISVSVN,
		Debug:       body.Debug(),
		ReportData:  HexBytes(body.ReportData[:]),
		TCBStatus:   status,
		AdvisoryIDs: mergeAdvisories(level.AdvisoryIDs, qeLevel.AdvisoryIDs),
		FMSPC:       fmspcString(ext.FMSPC),
	}, nil
}

// String is a one-line summary for logs.
func (id *Identity) String() string {
	return fmt.Sprintf("mrenclave=%x mrsigner=%x isvprodid=%d isvsvn=%d debug=%t tcb=%s", []byte(id.MREnclave), []byte(id.MRSigner), id.ISVProdID, id.ISVSVN, id.Debug, id.TCBStatus)
}
