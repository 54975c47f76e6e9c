package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// newVerifier builds the quote verifier: hardware quotes against the Intel SGX root and the
// operator's collateral (with --collateral-dir), simulated quotes against the installation's
// simulated platform (with --simulation), whose LAS it also returns (bound, not serving).
func newVerifier(ctx context.Context, cfg Config, st store.Backend, log *slog.Logger) (*attestation.Verifier, *sim.LAS, error) {
	v := &attestation.Verifier{}
	if cfg.CollateralDir != "" {
		v.Hardware = attestation.TrustAnchor{Root: dcap.IntelRoot(), Collateral: attestation.DirCollateral{Dir: cfg.CollateralDir}}
	}
	if !cfg.Simulation {
		return v, nil, nil
	}
	platform, err := loadOrCreatePlatform(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	v.Simulation = attestation.TrustAnchor{
		Root: platform.Root(),
		// Signed afresh once a minute rather than for every quote.
		Collateral: &attestation.CachedCollateral{TTL: time.Minute, Source: attestation.CollateralFunc(func(context.Context, string) (dcap.Collateral, error) {
			return platform.Collateral(time.Now())
		})},
		SkipRevocation: !platform.HasCRLs(),
	}
	if !platform.HasCRLs() {
		log.Warn("the simulated platform was created by an older version and has no CRLs: revocation is not checked in simulation")
	}
	las, err := sim.NewLAS(ctx, sim.LASConfig{Platform: platform, Logger: log, Addr: cfg.LASAddr})
	if err != nil {
		return nil, nil, fmt.Errorf("controlplane: %w", err)
	}
	log.Warn("SIMULATION MODE: the simulated platform's LAS signs any measurement it is asked to; identities from it are marked tee=simulation and give no hardware guarantee", "las", las.Addr())
	return v, las, nil
}

// sidecarMeasurement is the sidecar measurement that simulation-mode services accept when
// their session names none: the binary's (DefaultSidecarBinary of this executable by default),
// and that binary's path.
func sidecarMeasurement(cfg Config) ([32]byte, string, error) {
	bin := cfg.SidecarBinary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return [32]byte{}, "", fmt.Errorf("controlplane: %w", err)
		}
		bin = DefaultSidecarBinary(exe)
	}
	m, err := measure.File(bin)
	if err != nil {
		return [32]byte{}, "", fmt.Errorf("controlplane: sidecar measurement: %w", err)
	}
	return m, bin, nil
}
