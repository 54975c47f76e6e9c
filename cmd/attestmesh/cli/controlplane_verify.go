//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
)

// verifyConfig is what `controlplane verify` reads from its flags.
type verifyConfig struct {
	addr, mrenclave    string
	collateral         string
	simulation         bool
	simulatedRoot, out string
	timeout            time.Duration
}

func newControlPlaneVerifyCmd() *cobra.Command {
	var cfg verifyConfig
	cmd := &cobra.Command{
		Use:   "verify --addr HOST:PORT --mrenclave HEX (--collateral DIR | --simulation [--simulated-root FILE]) [--out ca.pem]",
		Short: "Attest the control plane, then write its CA bundle to pin",
		Long: `verify attests the control plane before anything trusts it, as SCONE's "scone cas attest"
does. It asks the management API at --addr for its evidence (GET /v1/attestation) with a fresh
random nonce, over TLS without trusting the server yet, and checks, in order:

  1. the evidence is of the kind asked for: hardware (--collateral) or simulation (--simulation);
  2. the quote verifies with the DCAP verifier of "attestmesh quote verify": hardware quotes
     against the Intel SGX Root CA and the collateral in --collateral (the layout of the control
     plane's --collateral-dir: tcb_info_<FMSPC>.json, qe_identity.json, tcb_chain.pem and both
     CRLs, pck_crl and root_ca_crl); simulated quotes against the simulated root;
  3. the enclave is not in debug mode, and its MRENCLAVE is --mrenclave (a refusal names both);
  4. REPORTDATA binds the CA the evidence carries (SHA-256 of its public key) and this nonce;
  5. the TLS server certificate of that very connection chains to that CA.

Then it writes the CA bundle to --out: pin it with --ca-file (or $ATTESTMESH_CA_FILE) in
"attestmesh apply", "attestmesh session ..." and the launcher and sidecars. It exits 1 and
says why on any refusal, and writes nothing.

--mrenclave is, in simulation, "attestmesh measure" of the control plane's binary (the binary
in its image); under Gramine on SGX, the MRENCLAVE of its signed manifest
(gramine-sgx-sigstruct-view).

SIMULATION IS A DRILL. A simulated control plane quotes itself on its own simulated platform,
and the simulated root and collateral come from it too: whoever runs it can make any evidence.
verify then shows which binary the control plane says it runs and exercises every hardware
check, but proves nothing against its operator. --simulated-root FILE pins the root (the
control plane writes it to <data-dir>/simulated-root.pem), so that a different simulated
platform is noticed later.`,
		Example: `  attestmesh measure bin/attestmesh
  attestmesh controlplane verify --addr 127.0.0.1:8081 --simulation --mrenclave <that value> --out ca.pem
  attestmesh apply -f mesh.yaml --controlplane https://127.0.0.1:8081 --ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			if err := runControlPlaneVerify(ctx, cmd, &cfg); err != nil {
				return fmt.Errorf("controlplane verify: %w", err)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.addr, "addr", "", "the management API, HOST:PORT (or https://HOST:PORT)")
	f.StringVar(&cfg.mrenclave, "mrenclave", "", "the MRENCLAVE the control plane must have (64 hex digits)")
	f.StringVar(&cfg.collateral, "collateral", "", "hardware: directory of Intel collateral for the control plane's platform (tcb_info_<FMSPC>.json, qe_identity.json, tcb_chain.pem, pck_crl, root_ca_crl)")
	f.BoolVar(&cfg.simulation, "simulation", false, "accept simulated evidence (a drill: the simulated root comes from the control plane itself)")
	f.StringVar(&cfg.simulatedRoot, "simulated-root", "", "simulation: PEM file of the simulated root to pin (default: the one the control plane sends)")
	f.StringVar(&cfg.out, "out", "ca.pem", "where to write the attested CA bundle")
	f.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "bound on fetching and verifying the evidence")
	for _, name := range []string{"addr", "mrenclave"} {
		if err := cmd.MarkFlagRequired(name); err != nil {
			panic(err) // a programming error: the flag is defined just above
		}
	}
	return cmd
}

func runControlPlaneVerify(ctx context.Context, cmd *cobra.Command, cfg *verifyConfig) error {
	policy, addr, err := cfg.policy()
	if err != nil {
		return err
	}
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	nonce, err := evidence.NewNonce()
	if err != nil {
		return err
	}
	ev, peer, err := evidence.Fetch(ctx, addr, nonce)
	if err != nil {
		return err
	}
	res, err := evidence.Verify(ctx, ev, nonce, peer, policy)
	if err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	if err := writeFileAtomic(cfg.out, ca.MarshalCertsPEM(res.CA), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	report(cmd.OutOrStdout(), cmd.ErrOrStderr(), addr, cfg.out, res)
	return nil
}

// policy checks the flags and returns the verification policy and the address.
func (cfg *verifyConfig) policy() (evidence.Policy, string, error) {
	var p evidence.Policy
	addr := strings.TrimSuffix(strings.TrimPrefix(cfg.addr, "https://"), "/")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return p, "", fmt.Errorf("--addr %q: want HOST:PORT: %w", cfg.addr, err)
	}
	mr, err := hex.DecodeString(cfg.mrenclave)
	if err != nil || len(mr) != len(p.MREnclave) {
		return p, "", fmt.Errorf("--mrenclave %q: want 64 hex digits (attestmesh measure BINARY prints them)", cfg.mrenclave)
	}
	copy(p.MREnclave[:], mr)
	switch {
	case cfg.simulation == (cfg.collateral != ""):
		return p, "", errors.New("give exactly one of --collateral DIR (hardware) and --simulation")
	case cfg.simulatedRoot != "" && !cfg.simulation:
		return p, "", errors.New("--simulated-root goes with --simulation")
	case cfg.simulation:
		p.TEE = attestapi.TEESimulation
		if cfg.simulatedRoot != "" {
			pemBytes, err := os.ReadFile(cfg.simulatedRoot)
			if err != nil {
				return p, "", fmt.Errorf("--simulated-root: %w", err)
			}
			if p.Root, err = dcap.LoadRoot(pemBytes); err != nil {
				return p, "", fmt.Errorf("--simulated-root %s: %w", cfg.simulatedRoot, err)
			}
		}
	default:
		if st, err := os.Stat(cfg.collateral); err != nil || !st.IsDir() {
			return p, "", fmt.Errorf("--collateral %s: want a directory of Intel collateral", cfg.collateral)
		}
		p.TEE = attestapi.TEESGX
		p.Collateral = attestation.DirCollateral{Dir: cfg.collateral}.Collateral
	}
	return p, addr, nil
}

// report prints what was verified, and, on stderr, what it does not prove.
func report(stdout, stderr io.Writer, addr, out string, res *evidence.Result) {
	id := res.Identity
	fmt.Fprintf(stdout, "control plane at %s attested (%s)\n", addr, res.TEE)
	fmt.Fprintf(stdout, "  mrenclave   %s (as expected)\n", id.MREnclave)
	fmt.Fprintf(stdout, "  tcb status  %s\n", tcbLine(id))
	fmt.Fprintf(stdout, "  ca          %s, SHA-256 %s\n", res.CA.Subject, evidence.Fingerprint(res.CA))
	fmt.Fprintf(stdout, "  reportdata  binds that CA's public key and this request's nonce\n")
	fmt.Fprintf(stdout, "  tls         the server certificate (%s) chains to that CA\n", res.Server.Subject)
	root := "Intel SGX Root CA"
	if res.TEE == attestapi.TEESimulation {
		root = "simulated, pinned"
		if res.RootFromEvidence {
			root = "simulated, sent by the control plane itself"
		}
	}
	fmt.Fprintf(stdout, "  root        %s, SHA-256 %s\n", root, evidence.Fingerprint(res.Root))
	fmt.Fprintf(stdout, "wrote the attested CA bundle to %s: pin it with --ca-file %s\n", out, out)

	if res.TEE == attestapi.TEESimulation {
		fmt.Fprintln(stderr, "attestmesh: controlplane verify: WARNING: SIMULATION: the control plane quoted itself on its own simulated platform"+
			" (no enclave, no hardware key). This shows which binary it says it runs and drills the hardware checks; it proves nothing"+
			" against whoever runs the control plane.")
		if res.RootFromEvidence {
			fmt.Fprintln(stderr, "attestmesh: controlplane verify: the simulated root came with the evidence; pin it with --simulated-root FILE"+
				" (the control plane's <data-dir>/simulated-root.pem) to notice a different platform next time.")
		}
	}
	if id.TCBStatus != dcap.TCBUpToDate {
		fmt.Fprintf(stderr, "attestmesh: controlplane verify: WARNING: the control plane's platform TCB is %s: apply the platform's updates\n", tcbLine(id))
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if err := res.Server.VerifyHostname(host); err != nil {
			fmt.Fprintf(stderr, "attestmesh: controlplane verify: note: the server certificate does not name %s, so clients that reach the control plane by that name will fail; "+
				"start it with --server-name %s (or --advertise-host)\n", host, host)
		}
	}
}

func tcbLine(id *dcap.Identity) string {
	if len(id.AdvisoryIDs) == 0 {
		return id.TCBStatus
	}
	return id.TCBStatus + " (" + strings.Join(id.AdvisoryIDs, ", ") + ")"
}
