package dcap

import (
	"errors"
	"fmt"
)

// Reason classifies why a quote was refused. The set is small and fixed so that callers can
// use it as a metric label.
type Reason string

// Reasons for refusing a quote.
const (
	// ReasonMalformed: the quote or a collateral document does not parse.
	ReasonMalformed Reason = "malformed"
	// ReasonUnsupported: a well-formed input of a version or type this verifier does not handle.
	ReasonUnsupported Reason = "unsupported"
	// ReasonConfig: the verifier was called without what it needs (no root CA).
	ReasonConfig Reason = "config"
	// ReasonPCKChainMissing: the quote carries no PCK certificate chain (certification data
	// type other than 5), so it cannot be verified offline.
	ReasonPCKChainMissing Reason = "pck_chain_missing"
	// ReasonPCKChain: the PCK certificate chain is malformed, does not verify, or does not end
	// in the pinned root.
	ReasonPCKChain Reason = "pck_chain"
	// ReasonCertExpired: a certificate (PCK chain or TCB signing chain) has expired.
	ReasonCertExpired Reason = "cert_expired"
	// ReasonCertNotYetValid: a certificate (PCK chain or TCB signing chain) is not yet valid.
	ReasonCertNotYetValid Reason = "cert_not_yet_valid"
	// ReasonQESignature: the QE report signature does not verify with the PCK key.
	ReasonQESignature Reason = "qe_signature"
	// ReasonQEBinding: the QE report's REPORTDATA does not bind the attestation key and the QE
	// authentication data.
	ReasonQEBinding Reason = "qe_binding"
	// ReasonISVSignature: the enclave report signature does not verify with the attestation key.
	ReasonISVSignature Reason = "isv_signature"
	// ReasonCollateralSignature: TCB Info or QE Identity is not signed by a TCB signing
	// certificate that chains to the pinned root.
	ReasonCollateralSignature Reason = "collateral_signature"
	// ReasonCollateralExpired: TCB Info or QE Identity is past its nextUpdate or maximum age.
	ReasonCollateralExpired Reason = "collateral_expired"
	// ReasonCollateralNotYetValid: TCB Info or QE Identity was issued after the verification time.
	ReasonCollateralNotYetValid Reason = "collateral_not_yet_valid"
	// ReasonQEIdentity: the quoting enclave does not match the QE Identity.
	ReasonQEIdentity Reason = "qe_identity"
	// ReasonTCBUnknown: the platform's TCB does not match the TCB Info (other FMSPC or PCE ID,
	// no TCB level at or below it, unknown status).
	ReasonTCBUnknown Reason = "tcb_unknown"
	// ReasonTCBRevoked: the platform's or the QE's TCB level is Revoked.
	ReasonTCBRevoked Reason = "tcb_revoked"
	// ReasonCertRevoked: a CRL revokes the PCK certificate, its CA or the TCB signing
	// certificate.
	ReasonCertRevoked Reason = "cert_revoked"
	// ReasonCRL: a CRL is missing, malformed, not signed by its CA or out of date.
	ReasonCRL Reason = "crl"
	// ReasonUnknown is what ReasonOf returns for a non-nil error that carries no Reason.
	ReasonUnknown Reason = "unknown"
)

// Error is a verification failure with its Reason. Its message starts with "dcap: " and says
// which field failed, with the expected and actual values where there are any.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason carried by err (found with errors.As), "" for a nil error and
// ReasonUnknown for an error that carries none.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var de *Error
	if errors.As(err, &de) {
		return de.Reason
	}
	return ReasonUnknown
}

// fail builds an *Error whose message is "dcap: " followed by the formatted text.
func fail(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf("dcap: "+format, args...)}
}
