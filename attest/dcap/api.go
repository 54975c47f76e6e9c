package dcap

import (
	"crypto/x509"
	"errors"
	"time"
)

// Collateral is what a verifier needs besides the quote: the TCB Info and QE Identity
// documents exactly as served by Intel PCS (signed JSON), and the PEM chain that signs them
// (TCB Signing certificate, then the root).
type Collateral struct {
	TCBInfo      []byte // {"tcbInfo":{...},"signature":"..."}
	QEIdentity   []byte // {"enclaveIdentity":{...},"signature":"..."}
	TCBSignChain []byte // PEM: TCB signing cert, then root
}

// Options control verification.
type Options struct {
	// Root is the pinned root CA; the PCK chain and the TCB signing chain must end in it.
	Root *x509.Certificate
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// CollateralMaxAge bounds how old (since issueDate) TCB Info and QE Identity may be; zero
	// means the documents' own nextUpdate decides alone.
	CollateralMaxAge time.Duration
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

// ErrNotImplemented is temporary scaffolding; Verify is implemented in verify.go.
var ErrNotImplemented = errors.New("dcap: not implemented")
