// Package evidence is the control plane's attestation of itself: the evidence it serves about
// itself on the management API, and its verification by a client before the client trusts
// the control plane's CA (`attestmesh controlplane verify`, as SCONE's `scone cas attest`).
//
//	GET /v1/attestation?nonce=<64 hex digits>   no client certificate needed   200 JSON
//
// # Binding
//
// The quote's REPORTDATA is attestapi.BindReportData(CA key, nonce): SHA-256 of the DER
// SubjectPublicKeyInfo of the control plane's CA certificate in the first 32 bytes, the
// caller's nonce in the last 32; the same layout as a workload's binding of its CSR key. A
// quote therefore says: the enclave with this MRENCLAVE holds (or vouches for) this CA, and it
// said so after the caller picked the nonce.
//
// # Wire format (version 1)
//
//	{"version": 1,
//	 "tee": "sgx" | "simulation",
//	 "quote": BASE64,                  a DCAP v3 quote with the PCK chain inside (type 5)
//	 "ca_bundle": PEM,                 the control plane's CA: exactly one certificate
//	 "simulated_root": PEM,            simulation only: the simulated platform's root CA
//	 "collateral": {                   simulation only: that platform's collateral
//	   "tcb_info": JSON, "qe_identity": JSON, "tcb_sign_chain": PEM,
//	   "pck_crl": BASE64 DER, "root_ca_crl": BASE64 DER}}
//
// Hardware evidence carries no collateral: the verifier brings Intel's (the same directory
// layout as the control plane's --collateral-dir, CRLs included) and pins Intel's root.
// Unknown fields are ignored, so that version 1 can grow.
//
// # Simulation is a drill
//
// In simulation the quote comes from the control plane's own simulated platform, and so do the
// root and collateral that verify it: whoever runs the control plane can make any evidence. A
// verified simulated quote shows which binary the control plane says it runs, and exercises
// every check that hardware mode makes; it proves nothing against the control plane's
// operator. Pinning the simulated root (Policy.Root) from a file taken once, out of band,
// at least notices a different platform later.
//
// # What Verify checks, in order
//
//  1. the evidence's TEE is the one the caller asked for (no downgrade to simulation);
//  2. the quote verifies with attest/dcap against the pinned root (Intel's; in simulation the
//     pinned simulated root, else the evidence's) and its collateral, CRLs included;
//  3. the enclave is not in debug mode;
//  4. its MRENCLAVE is the expected one (the refusal names both);
//  5. REPORTDATA binds the CA the evidence carries, and the caller's nonce (a replay fails here);
//  6. the TLS server certificate of the connection that served the evidence chains to that CA
//     (a relay that is not the attested control plane fails here).
//
// Only then is the CA worth pinning.
package evidence

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/ca"
)

// Path is where the management API serves the evidence.
const Path = "/v1/attestation"

// Version is the version of the wire format.
const Version = 1

// Bounds of what Parse accepts.
const (
	// MaxSize bounds an evidence document (a quote is about 6 KiB, the collateral a few).
	MaxSize = 1 << 20
	// MaxQuoteSize bounds the quote.
	MaxQuoteSize = 64 << 10
)

// Evidence is the control plane's evidence about itself.
type Evidence struct {
	TEE   attestapi.TEE
	Quote []byte
	// CA is the control plane's CA certificate, whose public key REPORTDATA binds.
	CA *x509.Certificate
	// SimulatedRoot and Collateral verify a simulated quote (TEESimulation only).
	SimulatedRoot *x509.Certificate
	Collateral    *dcap.Collateral
}

type wire struct {
	Version       int             `json:"version"`
	TEE           string          `json:"tee"`
	Quote         []byte          `json:"quote"`
	CABundle      string          `json:"ca_bundle"`
	SimulatedRoot string          `json:"simulated_root,omitempty"`
	Collateral    *wireCollateral `json:"collateral,omitempty"`
}

// wireCollateral has the field names of the simulated platform's LAS.
type wireCollateral struct {
	TCBInfo      string `json:"tcb_info"`
	QEIdentity   string `json:"qe_identity"`
	TCBSignChain string `json:"tcb_sign_chain"`
	PCKCRL       []byte `json:"pck_crl,omitempty"`
	RootCACRL    []byte `json:"root_ca_crl,omitempty"`
}

// ReportData is the REPORTDATA that binds caCert's public key and nonce.
func ReportData(caCert *x509.Certificate, nonce [32]byte) [64]byte {
	return attestapi.BindReportData(caCert.RawSubjectPublicKeyInfo, nonce)
}

// Marshal encodes the evidence as JSON.
func (e *Evidence) Marshal() ([]byte, error) {
	if e.CA == nil {
		return nil, errors.New("evidence: no CA")
	}
	w := wire{Version: Version, TEE: string(e.TEE), Quote: e.Quote, CABundle: string(ca.MarshalCertsPEM(e.CA))}
	if e.SimulatedRoot != nil {
		w.SimulatedRoot = string(ca.MarshalCertsPEM(e.SimulatedRoot))
	}
	if c := e.Collateral; c != nil {
		w.Collateral = &wireCollateral{TCBInfo: string(c.TCBInfo), QEIdentity: string(c.QEIdentity), TCBSignChain: string(c.TCBSignChain),
			PCKCRL: c.PCKCRL, RootCACRL: c.RootCACRL}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("evidence: encode: %w", err)
	}
	return b, nil
}

// Parse decodes and checks the shape of an evidence document: its version and TEE, a quote
// that parses, exactly one CA certificate, and the simulated root and collateral present in
// simulation and absent otherwise. It verifies nothing: see Verify.
func Parse(data []byte) (*Evidence, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("evidence: %d bytes, more than %d", len(data), MaxSize)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("evidence: not a JSON evidence document: %w", err)
	}
	if w.Version != Version {
		return nil, fmt.Errorf("evidence: version %d, want %d", w.Version, Version)
	}
	e := &Evidence{TEE: attestapi.TEE(w.TEE)}
	switch e.TEE {
	case attestapi.TEESGX, attestapi.TEESimulation:
	default:
		return nil, fmt.Errorf("evidence: tee %q, want %q or %q", w.TEE, attestapi.TEESGX, attestapi.TEESimulation)
	}
	switch {
	case len(w.Quote) == 0:
		return nil, errors.New("evidence: no quote")
	case len(w.Quote) > MaxQuoteSize:
		return nil, fmt.Errorf("evidence: quote is %d bytes, more than %d", len(w.Quote), MaxQuoteSize)
	}
	if _, err := dcap.ParseQuote(w.Quote); err != nil {
		return nil, fmt.Errorf("evidence: quote: %w", err)
	}
	e.Quote = w.Quote
	var err error
	if e.CA, err = oneCert("ca_bundle", w.CABundle); err != nil {
		return nil, err
	}
	if !e.CA.IsCA || !e.CA.BasicConstraintsValid {
		return nil, fmt.Errorf("evidence: ca_bundle: certificate %q is not a CA certificate", e.CA.Subject)
	}
	if e.TEE != attestapi.TEESimulation {
		if w.SimulatedRoot != "" || w.Collateral != nil {
			return nil, fmt.Errorf("evidence: tee %q with a simulated root or collateral: only simulated evidence carries them", e.TEE)
		}
		return e, nil
	}
	if e.SimulatedRoot, err = oneCert("simulated_root", w.SimulatedRoot); err != nil {
		return nil, err
	}
	c := w.Collateral
	if c == nil || c.TCBInfo == "" || c.QEIdentity == "" || c.TCBSignChain == "" {
		return nil, errors.New("evidence: simulated evidence without its collateral (tcb_info, qe_identity, tcb_sign_chain)")
	}
	e.Collateral = &dcap.Collateral{TCBInfo: []byte(c.TCBInfo), QEIdentity: []byte(c.QEIdentity), TCBSignChain: []byte(c.TCBSignChain),
		PCKCRL: c.PCKCRL, RootCACRL: c.RootCACRL}
	return e, nil
}

// oneCert parses a PEM field that must hold exactly one certificate.
func oneCert(field, pemText string) (*x509.Certificate, error) {
	if pemText == "" {
		return nil, fmt.Errorf("evidence: %s missing", field)
	}
	certs, err := ca.ParseCertsPEM([]byte(pemText))
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: %w", field, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("evidence: %s holds %d certificates, want exactly one (REPORTDATA binds one key)", field, len(certs))
	}
	return certs[0], nil
}

// quoteFMSPC reads the FMSPC of the PCK certificate inside a parsed quote, to pick collateral.
func quoteFMSPC(quote []byte) (string, error) {
	q, err := dcap.ParseQuote(quote)
	if err != nil {
		return "", err
	}
	if q.Signature.Certification.Type != dcap.CertDataPCKChain {
		return "", fmt.Errorf("quote: PCK certificate chain not present (certification data type %d, want %d)",
			q.Signature.Certification.Type, dcap.CertDataPCKChain)
	}
	b, _ := pem.Decode(q.Signature.Certification.Data)
	if b == nil {
		return "", errors.New("quote: PCK certificate chain: no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("quote: PCK certificate: %w", err)
	}
	ext, err := dcap.ParsePCKExtensions(leaf)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%X", ext.FMSPC[:]), nil
}
