package dcap

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Collateral is what a verifier needs besides the quote: the TCB Info and QE Identity
// documents exactly as served by Intel PCS (signed JSON), and the PEM chain that signs them
// (TCB Signing certificate, then the root).
type Collateral struct {
	TCBInfo      []byte // {"tcbInfo":{...},"signature":"..."}
	QEIdentity   []byte // {"enclaveIdentity":{...},"signature":"..."}
	TCBSignChain []byte // PEM: TCB signing cert, then root
	// PCKCRL is the CRL of the CA that issued the PCK certificate (Intel's PCK Processor or
	// Platform CA), DER or PEM, as Intel PCS serves it (GET /sgx/certification/v4/pckcrl?ca=...).
	PCKCRL []byte
	// RootCACRL is the root CA's CRL (DER or PEM; Intel publishes the SGX Root CA's at
	// https://certificates.trustedservices.intel.com/IntelSGXRootCA.der), which revokes the
	// intermediate CAs and TCB signing certificates.
	RootCACRL []byte
}

// Options control verification.
type Options struct {
	// Root is the pinned root CA; the PCK chain and the TCB signing chain must end in it.
	Root *x509.Certificate
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// CollateralMaxAge is the operator's freshness policy for TCB Info and QE Identity. Zero:
	// a document is accepted from its issueDate until its own nextUpdate. Non-zero: from its
	// issueDate for CollateralMaxAge, in place of nextUpdate (which says when Intel publishes
	// the next version, not when this one stops being true), as oasis-core's
	// TCBValidityPeriod does; a value shorter than 30 days tightens, a longer one relaxes.
	CollateralMaxAge time.Duration
	// SkipRevocation verifies without the CRLs. Only for offline checks of quotes whose CRLs
	// are not at hand (public test vectors): a revoked PCK certificate or CA then passes.
	SkipRevocation bool
}

// Identity is the verified content of a quote.
type Identity struct {
	MREnclave   HexBytes `json:"mrenclave"`
	MRSigner    HexBytes `json:"mrsigner"`
	ISVProdID   uint16   `json:"isvprodid"`
	ISVSVN      uint16   `json:"isvsvn"`
	Debug       bool     `json:"debug"`
	ReportData  HexBytes `json:"reportdata"`
	TCBStatus   string   `json:"tcb_status"`
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
	FMSPC       string   `json:"fmspc"`
}

// HexBytes marshals to JSON as lower-case hex.
type HexBytes []byte

// MarshalJSON encodes the bytes as a lower-case hex string.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2+hex.EncodedLen(len(h)))
	out = append(out, '"')
	out = hex.AppendEncode(out, h)
	return append(out, '"'), nil
}

// UnmarshalJSON decodes a hex string (either case).
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("dcap: hex bytes: %w", err)
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("dcap: hex bytes: %w", err)
	}
	*h = v
	return nil
}

// String returns the lower-case hex encoding.
func (h HexBytes) String() string { return hex.EncodeToString(h) }
