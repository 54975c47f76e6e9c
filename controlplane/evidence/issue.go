package evidence

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
)

// Quoter quotes the control plane itself: a DCAP quote of its enclave (or, in simulation, of
// its binary's measurement) carrying reportData. Implementations must be safe for concurrent
// use: attest/gramine.Device on hardware, the simulated platform in simulation.
type Quoter interface {
	Quote(ctx context.Context, reportData [64]byte) ([]byte, error)
}

// QuoterFunc adapts a function to Quoter.
type QuoterFunc func(ctx context.Context, reportData [64]byte) ([]byte, error)

// Quote implements Quoter.
func (f QuoterFunc) Quote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	return f(ctx, reportData)
}

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	TEE    attestapi.TEE
	Quoter Quoter
	// CA is the control plane's CA certificate.
	CA *x509.Certificate
	// SimulatedRoot and Collateral (TEESimulation only) are the simulated platform's root and
	// its collateral at a given time.
	SimulatedRoot *x509.Certificate
	Collateral    func(now time.Time) (dcap.Collateral, error)
	// MaxConcurrent bounds the quotes being made at once (default 2); further requests wait
	// for a turn as long as their context lets them.
	MaxConcurrent int
}

// Issuer makes the control plane's evidence. Safe for concurrent use.
type Issuer struct {
	cfg  IssuerConfig
	turn chan struct{}
}

// NewIssuer checks cfg and returns an Issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	switch {
	case cfg.Quoter == nil:
		return nil, errors.New("evidence: issuer: no quoter")
	case cfg.CA == nil:
		return nil, errors.New("evidence: issuer: no CA")
	case cfg.TEE == attestapi.TEESimulation && (cfg.SimulatedRoot == nil || cfg.Collateral == nil):
		return nil, errors.New("evidence: issuer: simulation needs the simulated root and its collateral")
	case cfg.TEE != attestapi.TEESimulation && cfg.TEE != attestapi.TEESGX:
		return nil, fmt.Errorf("evidence: issuer: TEE %q, want %q or %q", cfg.TEE, attestapi.TEESGX, attestapi.TEESimulation)
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 2
	}
	return &Issuer{cfg: cfg, turn: make(chan struct{}, cfg.MaxConcurrent)}, nil
}

// TEE is the kind of evidence the issuer makes.
func (i *Issuer) TEE() attestapi.TEE { return i.cfg.TEE }

// Issue returns the evidence for nonce, encoded (see Marshal).
func (i *Issuer) Issue(ctx context.Context, nonce [32]byte) ([]byte, error) {
	select {
	case i.turn <- struct{}{}:
		defer func() { <-i.turn }()
	case <-ctx.Done():
		return nil, fmt.Errorf("evidence: waiting to quote: %w", context.Cause(ctx))
	}
	quote, err := i.cfg.Quoter.Quote(ctx, ReportData(i.cfg.CA, nonce))
	if err != nil {
		return nil, fmt.Errorf("evidence: quote: %w", err)
	}
	ev := &Evidence{TEE: i.cfg.TEE, Quote: quote, CA: i.cfg.CA}
	if i.cfg.TEE == attestapi.TEESimulation {
		c, err := i.cfg.Collateral(time.Now())
		if err != nil {
			return nil, fmt.Errorf("evidence: collateral: %w", err)
		}
		ev.SimulatedRoot, ev.Collateral = i.cfg.SimulatedRoot, &c
	}
	return ev.Marshal()
}
