package attestation

import (
	"errors"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errNonceInvalid  = &Refusal{Reason: attestapi.ReasonNonceInvalid, Code: codes.PermissionDenied}
	errNonceReplayed = &Refusal{Reason: attestapi.ReasonNonceReplayed, Code: codes.PermissionDenied}
	errNonceExpired  = &Refusal{Reason: attestapi.ReasonNonceExpired, Code: codes.PermissionDenied}
	errNonceCapacity = &Refusal{Reason: attestapi.ReasonNonceCapacity, Code: codes.ResourceExhausted}
)

// Refusal classifies an attestation failure. It is used as a sentinel wrapped with %w, so that
// the message keeps the precise detail while the reason and status code stay bounded.
type Refusal struct {
	Reason attestapi.Reason
	Code   codes.Code
}

func (r *Refusal) Error() string { return "attestation refused (" + string(r.Reason) + ")" }

// refuse builds a refusal sentinel for reason with the gRPC code that fits it.
func refuse(reason attestapi.Reason) *Refusal {
	code := codes.PermissionDenied
	switch reason {
	case attestapi.ReasonMalformed, attestapi.ReasonCSRInvalid:
		code = codes.InvalidArgument
	case attestapi.ReasonUnknownSession, attestapi.ReasonUnknownService:
		code = codes.NotFound
	case attestapi.ReasonInternal:
		code = codes.Internal
	case attestapi.ReasonNonceCapacity, attestapi.ReasonRateLimited:
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
	// PublicAs, when set, is the refusal the caller is told instead of Refusal (the metrics and
	// the log keep Refusal's reason): two refusals that must look alike to strangers.
	PublicAs *Refusal
}

func (d *Denial) Error() string { return d.Refusal.Error() + ": " + d.Detail }

// Unwrap returns the Refusal, so that ReasonOf and errors.As see it.
func (d *Denial) Unwrap() error { return d.Refusal }

// deny returns a Denial for reason: public for the caller, the formatted detail for the log.
func deny(reason attestapi.Reason, public, format string, args ...any) error {
	return &Denial{Refusal: refuse(reason), Public: public, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the refusal reason carried by err, attestapi.ReasonInternal for an unclassified error
// and attestapi.ReasonNone for nil.
func ReasonOf(err error) attestapi.Reason {
	if err == nil {
		return attestapi.ReasonNone
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return attestapi.ReasonInternal
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
		if d.PublicAs != nil {
			return status.Error(d.PublicAs.Code, d.PublicAs.Error()+": "+d.Public)
		}
		return status.Error(r.Code, d.Refusal.Error()+": "+d.Public)
	}
	return status.Error(r.Code, err.Error())
}
