package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/gramine"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// The values of --self-attestation.
const (
	SelfAttestAuto       = "auto"
	SelfAttestGramine    = "gramine"
	SelfAttestSimulation = "simulation"
	SelfAttestNone       = "none"
)

// simulatedRootFile is where, in simulation, the simulated platform's root is written beside
// ca.pem, for operators who pin it (`controlplane verify --simulated-root`).
const simulatedRootFile = "simulated-root.pem"

// newEvidenceIssuer makes what the control plane says about itself (controlplane/evidence):
// under Gramine, quotes of its enclave from the attestation device; in simulation, quotes of
// its own binary's measurement from its own simulated platform; or nothing (nil), which the
// management API then tells whoever asks. --self-attestation auto takes the first that is
// there.
func newEvidenceIssuer(ctx context.Context, cfg Config, st store.Backend, authority *ca.Authority, log *slog.Logger) (*evidence.Issuer, error) {
	mode := cfg.SelfAttestation
	if mode == "" {
		mode = SelfAttestAuto
	}
	caCert := authority.Bundle()[0]
	if mode == SelfAttestAuto || mode == SelfAttestGramine {
		dev, err := gramine.New(cfg.AttestationDevice)
		switch {
		case err == nil:
			log.Info("control plane evidence: SGX quotes of this enclave from Gramine's attestation device", "device", dev.Dir())
			iss, err := evidence.NewIssuer(evidence.IssuerConfig{TEE: attestapi.TEESGX, Quoter: dev, CA: caCert})
			if err != nil {
				return nil, fmt.Errorf("controlplane: %w", err)
			}
			return iss, nil
		case mode == SelfAttestGramine || !errors.Is(err, gramine.ErrNoEnclave):
			return nil, fmt.Errorf("controlplane: --self-attestation %s: %w (--self-attestation none runs without evidence)", mode, err)
		}
	}
	if mode == SelfAttestNone || !cfg.Simulation {
		log.Warn("the control plane serves no attestation evidence: it runs neither in an SGX enclave under Gramine nor with --simulation; " +
			"clients cannot attest it (`attestmesh controlplane verify`) and must trust its CA on other grounds")
		return nil, nil
	}
	platform, err := loadOrCreatePlatform(ctx, st)
	if err != nil {
		return nil, err
	}
	self, err := measure.Running()
	if err != nil {
		return nil, fmt.Errorf("controlplane: measuring this control plane: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, simulatedRootFile), ca.MarshalCertsPEM(platform.Root()), 0o644); err != nil { //nolint:gosec // a CA certificate is public
		return nil, fmt.Errorf("controlplane: write %s: %w", simulatedRootFile, err)
	}
	log.Warn("control plane evidence: SIMULATED quotes of this binary's measurement from this control plane's own simulated platform; "+
		"they prove which binary it says it runs, not who runs it (a drill for hardware mode)",
		"mrenclave", self.Hex(), "tee", attestapi.TEESimulation)
	iss, err := evidence.NewIssuer(evidence.IssuerConfig{
		TEE: attestapi.TEESimulation, CA: caCert, SimulatedRoot: platform.Root(),
		Quoter: evidence.QuoterFunc(func(_ context.Context, rd [64]byte) ([]byte, error) {
			return platform.Quote(sim.Report{MREnclave: self, ReportData: rd})
		}),
		Collateral: func(now time.Time) (dcap.Collateral, error) { return platform.Collateral(now) },
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return iss, nil
}

// evidenceFunc is what the management API calls for evidence: nil without an issuer.
func evidenceFunc(iss *evidence.Issuer) func(context.Context, [32]byte) ([]byte, error) {
	if iss == nil {
		return nil
	}
	return iss.Issue
}
