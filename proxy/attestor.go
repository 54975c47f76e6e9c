package proxy

import (
	"context"
	"crypto"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/attestation/attestationpb"
	"github.com/attestmesh/attestmesh/proxy/identity"
)

// AttestationAttestor is the Attestor over the control plane's attestation API: it attests
// configID as ROLE_SIDECAR with the measurement of this executable (the control plane accepts
// sidecars by the measurement of the attestmesh binary, not by the session's mrenclaves). It
// is safe for concurrent use as long as c is.
func AttestationAttestor(c *attestation.Client, configID string) (Attestor, error) {
	m, err := measure.Self()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return attestorFunc(func(ctx context.Context, key crypto.Signer) (*Identity, error) {
		res, err := c.Attest(ctx, configID, attestationpb.Role_ROLE_SIDECAR, key, attestation.Evidence{MREnclave: m})
		if err != nil {
			return nil, err // the sidecar adds "proxy: attest: "
		}
		return &identity.Identity{SVID: res.SVID, Bundle: res.Bundle, XDSAddr: res.XDSAddr}, nil
	}), nil
}

type attestorFunc func(ctx context.Context, key crypto.Signer) (*Identity, error)

func (f attestorFunc) Attest(ctx context.Context, key crypto.Signer) (*Identity, error) {
	return f(ctx, key)
}
