package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

// reasonUnauthorized marks a peer with a valid SVID whose ID is not allowed;
// it is counted in authz_denials, not in handshake failures.
const reasonUnauthorized = "unauthorized"

// PeerError explains why a peer was refused during the handshake.
type PeerError struct {
	// Reason is one of the metrics.Reason* values, or "unauthorized".
	Reason string
	// ID is the peer's SPIFFE ID when its certificate carried one.
	ID  spiffeid.ID
	Err error
}

func (e *PeerError) Error() string {
	if e.ID.IsZero() {
		return fmt.Sprintf("listener: peer refused (%s): %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("listener: peer %s refused (%s): %v", e.ID, e.Reason, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

var errNoPeerCert = errors.New("peer presented no certificate")

// verifyPeer verifies certs as an X.509-SVID chain against the bundle and
// authorizes its ID. It runs from VerifyConnection, so it also runs on resumed
// sessions, against the current bundle and policy.
func verifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, authorize tlsconfig.Authorizer) error {
	if len(certs) == 0 {
		return &PeerError{Reason: metrics.ReasonNoClientCert, Err: errNoPeerCert}
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return &PeerError{Reason: metrics.ReasonBadCertificate, Err: err}
	}
	if _, err := bundles.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
		return &PeerError{Reason: metrics.ReasonUnknownCA, ID: id, Err: err}
	}
	_, chains, err := x509svid.Verify(certs, bundles)
	if err != nil {
		return &PeerError{Reason: x509Reason(err), ID: id, Err: err}
	}
	if authorize == nil {
		return &PeerError{Reason: reasonUnauthorized, ID: id, Err: errors.New("no peer policy")}
	}
	if err := authorize(id, chains); err != nil {
		return &PeerError{Reason: reasonUnauthorized, ID: id, Err: err}
	}
	return nil
}

func x509Reason(err error) string {
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return metrics.ReasonExpired
	case errors.As(err, &ua):
		return metrics.ReasonUnknownCA
	default:
		return metrics.ReasonBadCertificate
	}
}

// classify maps a handshake error to a bounded reason.
func classify(err error) string {
	var pe *PeerError
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.As(err, &pe):
		return pe.Reason
	case errors.As(err, &rh):
		return metrics.ReasonPlaintext
	case errors.As(err, &alert):
		// The peer refused us; alerts 42-46 and 48 are certificate problems.
		switch uint8(alert) {
		case 42, 43, 44, 46:
			return metrics.ReasonBadCertificate
		case 45:
			return metrics.ReasonExpired
		case 48:
			return metrics.ReasonUnknownCA
		case 116:
			return metrics.ReasonNoClientCert
		}
		return metrics.ReasonOther
	default:
		return metrics.ReasonOther
	}
}

// benign reports errors from peers that connect and go away, which are not
// worth a warning.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
