package sim

import (
	"crypto/ecdsa"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
)

// IntelQEVendorID is the QE vendor ID of Intel's quoting enclave, which simulated quotes carry.
var IntelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// The simulated quoting enclave. Its identity is fixed and published in the QE Identity.
var (
	// QEMRSigner is the MRSIGNER of the simulated quoting enclave.
	QEMRSigner  = sha256.Sum256([]byte("attestmesh simulated SGX quoting enclave signer"))
	qeMREnclave = sha256.Sum256([]byte("attestmesh simulated SGX quoting enclave"))
	// qeAttributes: INIT | MODE64BIT | PROVISIONKEY, XFRM x87 | SSE (as Intel's QE: 0x15, 0x03).
	qeAttributes = [16]byte{0x15, 0, 0, 0, 0, 0, 0, 0, 0x03}
	qeAuthData   = []byte{
		0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
		0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
	}
)

const (
	// QEISVProdID and QEISVSVN identify the simulated quoting enclave.
	QEISVProdID = 1
	QEISVSVN    = 8
)

// Report is what an enclave asks to be quoted (attestapi.Report). Every field is the caller's
// claim: simulation signs it as given.
type Report = attestapi.Report

// attributes of an ISV enclave: INIT | MODE64BIT, DEBUG when asked; XFRM x87 | SSE.
func attributes(r *Report) [16]byte {
	a := [16]byte{0x05, 0, 0, 0, 0, 0, 0, 0, 0x03}
	if r.Debug {
		a[0] |= dcap.AttributeDebug
	}
	return a
}

// Quote returns a version 3 ECDSA-P256 DCAP quote of r: the ISV report body signed with the
// attestation key, the QE report binding that key and signed with the PCK key, and the PCK
// certificate chain (leaf, intermediate, root) as certification data type 5. It is safe for
// concurrent use.
func (p *Platform) Quote(r Report) ([]byte, error) {
	attPub, err := p.attKey.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("sim: attestation key: %w", err)
	}
	var q dcap.Quote
	q.Header = dcap.Header{
		Version:            dcap.QuoteVersion3,
		AttestationKeyType: dcap.AttestationKeyP256,
		QESVN:              QEISVSVN,
		PCESVN:             p.ext.PCESVN,
		QEVendorID:         IntelQEVendorID,
	}
	copy(q.Header.UserData[:], p.ext.PlatformInstanceID[:])
	q.Body = dcap.ReportBody{
		CPUSVN:     p.ext.CPUSVN,
		Attributes: attributes(&r),
		MREnclave:  r.MREnclave,
		MRSigner:   r.MRSigner,
		ISVProdID:  r.ISVProdID,
		ISVSVN:     r.ISVSVN,
		ReportData: r.ReportData,
	}
	s := &q.Signature
	copy(s.AttestationKey[:], attPub[1:]) // drop the 0x04 of the uncompressed point
	s.QEAuthData = qeAuthData
	s.QEReport = dcap.ReportBody{
		CPUSVN:     p.ext.CPUSVN,
		Attributes: qeAttributes,
		MREnclave:  qeMREnclave,
		MRSigner:   QEMRSigner,
		ISVProdID:  QEISVProdID,
		ISVSVN:     QEISVSVN,
	}
	binding := sha256.Sum256(append(s.AttestationKey[:], qeAuthData...))
	copy(s.QEReport.ReportData[:], binding[:])

	if s.ISVSignature, err = signRaw(p.attKey, append(q.Header.Marshal(), q.Body.Marshal()...)); err != nil {
		return nil, err
	}
	p.qeSigOnce.Do(func() { p.qeSig, p.qeSigErr = signRaw(p.pckKey, s.QEReport.Marshal()) })
	if p.qeSigErr != nil {
		return nil, p.qeSigErr
	}
	s.QEReportSignature = p.qeSig
	p.pckChainOnce.Do(func() {
		for _, c := range [][]byte{p.pck.Raw, p.pckCA.Raw, p.root.Raw} {
			p.pckChain = append(p.pckChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
	})
	s.Certification = dcap.CertificationData{Type: dcap.CertDataPCKChain, Data: p.pckChain}
	return q.Marshal(), nil
}

// signRaw signs SHA-256(msg) and returns r || s, 32 bytes each, big-endian.
func signRaw(key *ecdsa.PrivateKey, msg []byte) ([dcap.ECDSASigSize]byte, error) {
	var out [dcap.ECDSASigSize]byte
	digest := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(cryptorand.Reader, key, digest[:])
	if err != nil {
		return out, fmt.Errorf("sim: sign: %w", err)
	}
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}
