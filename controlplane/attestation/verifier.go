package attestation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// CollateralSource supplies the TCB Info, QE Identity and their signing chain for a platform.
// Implementations must be safe for concurrent use.
type CollateralSource interface {
	Collateral(ctx context.Context, fmspc string) (dcap.Collateral, error)
}

// CollateralFunc adapts a function to CollateralSource.
type CollateralFunc func(ctx context.Context, fmspc string) (dcap.Collateral, error)

// Collateral implements CollateralSource.
func (f CollateralFunc) Collateral(ctx context.Context, fmspc string) (dcap.Collateral, error) {
	return f(ctx, fmspc)
}

// CachedCollateral keeps the collateral that Source gives for each FMSPC for TTL, for a
// source that makes it on every call (the simulated platform signs fresh documents). Errors
// are not kept. Safe for concurrent use.
type CachedCollateral struct {
	Source CollateralSource
	TTL    time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]cachedCollateral
}

type cachedCollateral struct {
	c       dcap.Collateral
	expires time.Time
}

// Collateral implements CollateralSource.
func (cc *CachedCollateral) Collateral(ctx context.Context, fmspc string) (dcap.Collateral, error) {
	now := time.Now()
	if cc.Now != nil {
		now = cc.Now()
	}
	cc.mu.Lock()
	e, ok := cc.m[fmspc]
	cc.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.c, nil
	}
	c, err := cc.Source.Collateral(ctx, fmspc)
	if err != nil {
		return c, err
	}
	cc.mu.Lock()
	if cc.m == nil || len(cc.m) >= 1024 {
		cc.m = map[string]cachedCollateral{}
	}
	cc.m[fmspc] = cachedCollateral{c: c, expires: now.Add(cc.TTL)}
	cc.mu.Unlock()
	return c, nil
}

// DirCollateral reads hardware collateral from a directory, as fetched from Intel PCS (or a
// PCCS) by the operator: tcb_info_<FMSPC>.json (FMSPC in upper-case hex), qe_identity.json,
// tcb_chain.pem (the TCB-Info-Issuer-Chain), pck_crl.der or pck_crl.pem (the CRL of the PCK CA
// that issues the platforms' PCK certificates) and root_ca_crl.der or root_ca_crl.pem (the Intel
// SGX Root CA's CRL). The control plane has no network access to PCS by design: collateral is
// configuration, refreshed by the operator.
type DirCollateral struct{ Dir string }

// Collateral implements CollateralSource.
func (d DirCollateral) Collateral(_ context.Context, fmspc string) (dcap.Collateral, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(d.Dir, name))
		if err != nil {
			return nil, fmt.Errorf("attestation: collateral: %w", err)
		}
		return b, nil
	}
	var c dcap.Collateral
	var err error
	if c.TCBInfo, err = read("tcb_info_" + strings.ToUpper(fmspc) + ".json"); err != nil {
		return c, err
	}
	if c.QEIdentity, err = read("qe_identity.json"); err != nil {
		return c, err
	}
	if c.TCBSignChain, err = read("tcb_chain.pem"); err != nil {
		return c, err
	}
	either := func(names ...string) ([]byte, error) {
		for _, n := range names {
			if b, err := os.ReadFile(filepath.Join(d.Dir, n)); err == nil {
				return b, nil
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("attestation: collateral: %w", err)
			}
		}
		return nil, fmt.Errorf("attestation: collateral: none of %s in %s: revocation cannot be checked", strings.Join(names, ", "), d.Dir)
	}
	if c.PCKCRL, err = either("pck_crl.der", "pck_crl.pem"); err != nil {
		return c, err
	}
	if c.RootCACRL, err = either("root_ca_crl.der", "root_ca_crl.pem"); err != nil {
		return c, err
	}
	return c, nil
}

// TrustAnchor is a trusted root together with the collateral for quotes that chain to it.
type TrustAnchor struct {
	Root       *x509.Certificate
	Collateral CollateralSource
	// SkipRevocation verifies without CRLs: only for a simulated platform saved before it had
	// CRLs (a hardware anchor always checks them).
	SkipRevocation bool
}

// Verifier verifies quotes for sessions: hardware sessions against the Intel SGX root, and
// simulation sessions against the installation's simulated root only. Safe for concurrent use.
type Verifier struct {
	// Hardware is the Intel SGX Root CA and the operator's collateral; a nil Root disables
	// hardware attestation (every hardware quote is refused, saying so).
	Hardware TrustAnchor
	// Simulation is the simulated platform's root and collateral; a nil Root disables it.
	Simulation TrustAnchor
	// CollateralMaxAge bounds collateral age (see dcap.Options).
	CollateralMaxAge time.Duration
	// Now returns the verification time; nil means time.Now.
	Now func() time.Time
}

// Verify checks quote for a session in mode and returns the verified identity and the kind of
// TEE that produced it. A simulated quote presented to a hardware session is refused as such.
func (v *Verifier) Verify(ctx context.Context, quote []byte, mode session.Mode) (*dcap.Identity, attestapi.TEE, error) {
	q, err := dcap.ParseQuote(quote)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonQuoteInvalid), err)
	}
	fmspc, err := quoteFMSPC(q)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonQuoteInvalid), err)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	check := func(ev TrustAnchor) (*dcap.Identity, error) {
		c, err := ev.Collateral.Collateral(ctx, fmspc)
		if err != nil {
			return nil, deny(attestapi.ReasonQuoteInvalid, "this control plane holds no current collateral for the platform (FMSPC "+fmspc+")",
				"collateral for FMSPC %s: %v", fmspc, err)
		}
		id, err := dcap.Verify(quote, c, dcap.Options{Root: ev.Root, Now: now, CollateralMaxAge: v.CollateralMaxAge, SkipRevocation: ev.SkipRevocation})
		if dcap.ReasonOf(err) == dcap.ReasonCertRevoked {
			return nil, fmt.Errorf("%w: %w", refuse(attestapi.ReasonRevoked), err)
		}
		return id, err
	}
	switch mode {
	case session.ModeSimulation:
		if v.Simulation.Root == nil {
			return nil, "", fmt.Errorf("%w: the session accepts simulated quotes, but this control plane runs without a simulated platform (start it with --simulation)", refuse(attestapi.ReasonSimulationForbidden))
		}
		id, err := check(v.Simulation)
		if ReasonOf(err) == attestapi.ReasonRevoked || ReasonOf(err) == attestapi.ReasonQuoteInvalid {
			return nil, "", err
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: simulated quote: %w", refuse(attestapi.ReasonQuoteInvalid), err)
		}
		return id, attestapi.TEESimulation, nil
	default:
		if pckRoot := quoteRoot(q); pckRoot != nil && v.Simulation.Root != nil && pckRoot.Equal(v.Simulation.Root) {
			return nil, "", fmt.Errorf("%w: simulated quote for a session that requires hardware attestation (security.attestation.mode: hardware)", refuse(attestapi.ReasonSimulationForbidden))
		}
		if v.Hardware.Root == nil {
			return nil, "", fmt.Errorf("%w: hardware attestation is not configured on this control plane (no collateral)", refuse(attestapi.ReasonQuoteInvalid))
		}
		id, err := check(v.Hardware)
		if ReasonOf(err) == attestapi.ReasonRevoked || ReasonOf(err) == attestapi.ReasonQuoteInvalid {
			return nil, "", err
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonQuoteInvalid), err)
		}
		return id, attestapi.TEESGX, nil
	}
}

// quoteChain returns the PCK chain carried in the quote, or nil.
func quoteChain(q *dcap.Quote) []*x509.Certificate {
	if q.Signature.Certification.Type != dcap.CertDataPCKChain {
		return nil
	}
	certs, err := ca.ParseCertsPEM(q.Signature.Certification.Data)
	if err != nil {
		return nil
	}
	return certs
}

func quoteRoot(q *dcap.Quote) *x509.Certificate {
	chain := quoteChain(q)
	if len(chain) == 0 {
		return nil
	}
	return chain[len(chain)-1]
}

// fmspcs keeps the FMSPC of each PCK chain seen: every quote of a platform carries the same.
var fmspcs = struct {
	sync.Mutex
	m map[[sha256.Size]byte]string
}{}

// quoteFMSPC reads the FMSPC from the PCK leaf certificate in the quote, to pick collateral.
func quoteFMSPC(q *dcap.Quote) (string, error) {
	k := sha256.Sum256(q.Signature.Certification.Data)
	fmspcs.Lock()
	f, ok := fmspcs.m[k]
	fmspcs.Unlock()
	if ok && q.Signature.Certification.Type == dcap.CertDataPCKChain {
		return f, nil
	}
	f, err := parseQuoteFMSPC(q)
	if err != nil {
		return "", err
	}
	fmspcs.Lock()
	if fmspcs.m == nil || len(fmspcs.m) >= 1024 {
		fmspcs.m = map[[sha256.Size]byte]string{}
	}
	fmspcs.m[k] = f
	fmspcs.Unlock()
	return f, nil
}

func parseQuoteFMSPC(q *dcap.Quote) (string, error) {
	chain := quoteChain(q)
	if len(chain) == 0 {
		return "", errors.New("dcap: PCK certificate chain not present in the quote (certification data type 5 required)")
	}
	ext, err := dcap.ParsePCKExtensions(chain[0])
	if err != nil {
		return "", err
	}
	return strings.ToUpper(hex.EncodeToString(ext.FMSPC[:])), nil
}
