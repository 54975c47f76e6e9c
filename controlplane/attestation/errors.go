package attestation

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reason is the bounded metric label for why an attestation was refused.
type Reason string

// Refusal reasons. The set is closed: metric labels must stay bounded.
const (
	ReasonNone                Reason = ""
	ReasonMalformed           Reason = "malformed_request"
	ReasonUnknownSession      Reason = "unknown_session"
	ReasonUnknownService      Reason = "unknown_service"
	ReasonNonceInvalid        Reason = "nonce_invalid"
	ReasonNonceReplayed       Reason = "nonce_replayed"
	ReasonNonceExpired        Reason = "nonce_expired"
	ReasonNonceCapacity       Reason = "nonce_capacity"
	ReasonCSRInvalid          Reason = "csr_invalid"
	ReasonQuoteInvalid        Reason = "quote_invalid"
	ReasonSimulationForbidden Reason = "simulation_not_allowed"
	ReasonReportData          Reason = "reportdata_mismatch"
	ReasonMREnclave           Reason = "mrenclave_mismatch"
	ReasonSigner              Reason = "signer_mismatch"
	ReasonDebug               Reason = "debug_not_tolerated"
	ReasonTCB                 Reason = "tcb_not_tolerated"
	ReasonSidecarMeasurement  Reason = "sidecar_measurement"
	ReasonSidecarGrant        Reason = "sidecar_grant"
	ReasonImport              Reason = "import_refused"
	ReasonRevoked             Reason = "revoked"
	ReasonRateLimited         Reason = "rate_limited"
	ReasonInternal            Reason = "internal"
)

var (
	errNonceInvalid  = &Refusal{Reason: ReasonNonceInvalid, Code: codes.PermissionDenied}
	errNonceReplayed = &Refusal{Reason: ReasonNonceReplayed, Code: codes.PermissionDenied}
	errNonceExpired  = &Refusal{Reason: ReasonNonceExpired, Code: codes.PermissionDenied}
	errNonceCapacity = &Refusal{Reason: ReasonNonceCapacity, Code: codes.ResourceExhausted}
)

// Refusal classifies an attestation failure. It is used as a sentinel wrapped with %w, so that
// the message keeps the precise detail while the reason and status code stay bounded.
type Refusal struct {
	Reason Reason
	Code   codes.Code
}

func (r *Refusal) Error() string { return "attestation refused (" + string(r.Reason) + ")" }

// refuse builds a refusal sentinel for reason with the gRPC code that fits it.
func refuse(reason Reason) *Refusal {
	code := codes.PermissionDenied
	switch reason {
	case ReasonMalformed, ReasonCSRInvalid:
		code = codes.InvalidArgument
	case ReasonUnknownSession, ReasonUnknownService:
		code = codes.NotFound
	case ReasonInternal:
		code = codes.Internal
	case ReasonNonceCapacity, ReasonRateLimited:
		code = codes.ResourceExhausted
	}
	return &Refusal{Reason: reason, Code: code}
}

// Denial is a refusal whose detail (what the policy allows) is for the control plane's log
// only: the caller is told Public, which says what failed without the allowed values.
type Denial struct {
	*Refusal
	Public string
	Detail string
}

func (d *Denial) Error() string { return d.Refusal.Error() + ": " + d.Detail }

// Unwrap returns the Refusal, so that ReasonOf and errors.As see it.
func (d *Denial) Unwrap() error { return d.Refusal }

// deny returns a Denial for reason: public for the caller, the formatted detail for the log.
func deny(reason Reason, public, format string, args ...any) error {
	return &Denial{Refusal: refuse(reason), Public: public, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the refusal reason carried by err, ReasonInternal for an unclassified error
// and ReasonNone for nil.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ReasonInternal
}

// toStatus is the one place that maps attestation errors to gRPC status codes. Internal errors
// are not described to the caller (they may name internal state); refusals are, with the
// reason code and what failed, but a Denial keeps what the policy allows for the log.
func toStatus(err error) error {
	var r *Refusal
	if !errors.As(err, &r) || r.Code == codes.Internal {
		return status.Error(codes.Internal, "attestation: internal error (see control-plane log)")
	}
	var d *Denial
	if errors.As(err, &d) {
		return status.Error(r.Code, d.Refusal.Error()+": "+d.Public)
	}
	return status.Error(r.Code, err.Error())
}
