package proxy

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/proxy/grant"
	"github.com/attestmesh/attestmesh/proxy/identity"
)

// GrantSource returns a grant from the attested app beside the sidecar: by default
// grant.Wait for the sidecar's config ID, in its network namespace.
type GrantSource func(ctx context.Context) ([]byte, error)

// grantWait bounds one wait for the app's launcher: the sidecar logs and waits again.
const grantWait = 30 * time.Second

// AttestationAttestor is the Attestor over the control plane's attestation API: it attests
// configID as ROLE_SIDECAR with the measurement of this executable (a service's session says
// which sidecar measurements carry its identity; in simulation the control plane's own build is
// the default). For its first SVID it presents the grant that the app's launcher hands over
// (grants; nil: from the launcher in this network namespace); to renew, the SVID it holds; when
// that no longer counts (lapsed, or refused), a grant again. Safe for concurrent use as long as
// c is.
func AttestationAttestor(c *attestapi.Client, configID string, grants GrantSource, log *slog.Logger) (Attestor, error) {
	m, err := measure.Self()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if grants == nil {
		grants = func(ctx context.Context) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, grantWait)
			defer cancel()
			return grant.Wait(ctx, configID, 200*time.Millisecond, func(socket string) {
				log.Info("waiting for the app's launcher to attest and hand over a grant", "socket", socket)
			})
		}
	}
	return &sidecarAttestor{c: c, configID: configID, m: m, grants: grants, log: log}, nil
}

type sidecarAttestor struct {
	c        *attestapi.Client
	configID string
	m        [32]byte
	grants   GrantSource
	log      *slog.Logger

	mu      sync.Mutex
	current []*x509.Certificate
}

func (a *sidecarAttestor) Attest(ctx context.Context, key crypto.Signer) (*Identity, error) {
	req := attestapi.Request{ConfigID: a.configID, Role: attestationpb.Role_ROLE_SIDECAR, Key: key, Evidence: attestapi.Evidence{MREnclave: a.m}}
	a.mu.Lock()
	cur := a.current
	a.mu.Unlock()
	if len(cur) > 0 && time.Until(cur[0].NotAfter) > 5*time.Second {
		req.CurrentSVID = cur
		res, err := a.c.Attest(ctx, req)
		if err == nil {
			return a.keep(res), nil
		}
		if attestapi.RefusalReason(err) != attestapi.ReasonSidecarGrant {
			return nil, err // the sidecar adds "proxy: attest: "
		}
		a.log.Warn("the control plane no longer renews on the current SVID; asking the app's launcher for a grant", "error", err.Error())
		req.CurrentSVID = nil
	}
	g, err := a.grants(ctx)
	if err != nil {
		return nil, err
	}
	req.SidecarGrant = g
	res, err := a.c.Attest(ctx, req)
	if err != nil {
		return nil, err
	}
	return a.keep(res), nil
}

func (a *sidecarAttestor) keep(res *attestapi.Result) *Identity {
	a.mu.Lock()
	a.current = res.SVID
	a.mu.Unlock()
	return &identity.Identity{SVID: res.SVID, Bundle: res.Bundle, XDSAddr: res.XDSAddr}
}
