package attestapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
)

// NonceSize is the size of a control-plane nonce: the last 32 bytes of REPORTDATA.
const NonceSize = 32

// Report is what an enclave asks to be quoted. In simulation every field is the caller's claim,
// which the simulated platform signs as given; on hardware the CPU fills all but ReportData.
type Report struct {
	MREnclave  [32]byte
	MRSigner   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	Debug      bool
	ReportData [64]byte
}

// BindReportData returns the REPORTDATA that binds a workload's key to an attestation:
// SHA-256 of pubKeyDER (the DER SubjectPublicKeyInfo of the CSR's public key, as
// x509.MarshalPKIXPublicKey produces and CertificateRequest.RawSubjectPublicKeyInfo holds)
// in the first 32 bytes and the control plane's nonce in the last 32. The same binding
// applies to hardware and simulated quotes.
func BindReportData(pubKeyDER []byte, nonce [32]byte) [64]byte {
	var rd [64]byte
	h := sha256.Sum256(pubKeyDER)
	copy(rd[:32], h[:])
	copy(rd[32:], nonce[:])
	return rd
}

// CheckReportData checks that reportData, the REPORTDATA of a verified quote, is
// BindReportData(pubKeyDER, nonce). The error says which half differs.
func CheckReportData(reportData, pubKeyDER []byte, nonce [32]byte) error {
	if len(reportData) != 64 {
		return fmt.Errorf("attestapi: REPORTDATA is %d bytes, want 64", len(reportData))
	}
	want := BindReportData(pubKeyDER, nonce)
	keyOK := subtle.ConstantTimeCompare(reportData[:32], want[:32]) == 1
	nonceOK := subtle.ConstantTimeCompare(reportData[32:], want[32:]) == 1
	switch {
	case !keyOK && !nonceOK:
		return fmt.Errorf("attestapi: REPORTDATA binds neither the CSR's public key nor the nonce: got key hash %x, want %x", reportData[:32], want[:32])
	case !keyOK:
		return fmt.Errorf("attestapi: REPORTDATA does not bind the CSR's public key: got key hash %x, want %x", reportData[:32], want[:32])
	case !nonceOK:
		return fmt.Errorf("attestapi: REPORTDATA does not carry the nonce: got %x, want %x", reportData[32:], want[32:])
	}
	return nil
}
