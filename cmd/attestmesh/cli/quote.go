//go:build !attestmesh_sidecar

package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

func newQuoteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quote",
		Short: "Work with Intel SGX DCAP quotes",
	}
	cmd.AddCommand(newQuoteVerifyCmd())
	return cmd
}

// quoteVerifyConfig is what `quote verify` reads from its flags.
type quoteVerifyConfig struct {
	quote, tcbInfo, tcbChain, qeIdentity string
	root                                 string // PEM file; empty: the pinned Intel SGX Root CA
	at                                   int64  // Unix seconds; 0: now
	maxAge                               time.Duration
	pckCRL, rootCRL                      string
	noRevocation                         bool
}

func newQuoteVerifyCmd() *cobra.Command {
	var cfg quoteVerifyConfig
	cmd := &cobra.Command{
		Use:   "verify --quote F --tcb-info F --tcb-chain F --qe-identity F (--pck-crl F --root-ca-crl F | --no-revocation-check) [--at UNIX] [--root PEM]",
		Short: "Verify a DCAP quote offline against its collateral",
		Long: `verify checks an Intel SGX DCAP quote (version 3, ECDSA-P256, with the PCK certificate
chain inside: certification data type 5) offline, in pure Go:

  - the PCK certificate chain ends in the pinned root and is valid at the verification time;
  - the QE report is signed by the PCK key and binds the attestation key;
  - the enclave's report (header and report body) is signed by the attestation key;
  - the TCB Info (v3) and QE Identity (v2) are signed by the TCB signing chain, which ends in
    the same root, and are fresh: issued before the verification time and not past their
    nextUpdate (or, with --collateral-max-age, not older than that since issue);
  - the root CA's CRL (--root-ca-crl) revokes neither the PCK certificate's CA nor the TCB
    signing certificate, and the PCK CA's CRL (--pck-crl) does not revoke the PCK certificate;
    both CRLs are signed by their CA and current. --no-revocation-check skips this, loudly: only
    for quotes whose CRLs are not at hand (public test vectors);
  - the quoting enclave matches the QE Identity, and the platform's TCB (from the PCK
    certificate) selects a TCB level of the TCB Info, giving the TCB status and advisories.

The collateral files are what Intel PCS serves: the TCB Info JSON (/sgx/certification/v4/tcb),
its TCB-Info-Issuer-Chain header as a PEM file, the QE Identity JSON
(/sgx/certification/v4/qe/identity), the PCK CRL (/sgx/certification/v4/pckcrl?ca=processor or
platform, DER or PEM) and the Intel SGX Root CA CRL (DER or PEM).

On success it prints the enclave's identity as JSON (mrenclave, mrsigner, isvprodid, isvsvn,
debug, reportdata, tcb_status, advisory_ids, fmspc, revocation) and exits 0. Otherwise it exits 1 and
says why on stderr. A TCB status other than Revoked is reported, not refused: judging it is
the session policy's job.`,
		Example: `  attestmesh quote verify --quote quote.bin --tcb-info tcb_info.json \
    --tcb-chain tcb_chain.pem --qe-identity qe_identity.json --at 1671497404`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runQuoteVerify(cmd, &cfg); err != nil {
				return fmt.Errorf("quote verify: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.quote, "quote", "", "the quote, binary (required)")
	f.StringVar(&cfg.tcbInfo, "tcb-info", "", "the TCB Info JSON document for the platform's FMSPC (required)")
	f.StringVar(&cfg.tcbChain, "tcb-chain", "", "the PEM chain that signs TCB Info and QE Identity: TCB signing certificate, then root (required)")
	f.StringVar(&cfg.qeIdentity, "qe-identity", "", "the QE Identity JSON document (required)")
	f.Int64Var(&cfg.at, "at", 0, "verification time as Unix seconds (default: now)")
	f.StringVar(&cfg.root, "root", "", "PEM file with the root CA to pin (default: the embedded Intel SGX Root CA)")
	f.DurationVar(&cfg.maxAge, "collateral-max-age", 0, "accept TCB Info and QE Identity for this long after issue, in place of their nextUpdate (e.g. 2160h)")
	f.StringVar(&cfg.pckCRL, "pck-crl", "", "the CRL of the CA that issued the PCK certificate (DER or PEM)")
	f.StringVar(&cfg.rootCRL, "root-ca-crl", "", "the root CA's CRL (DER or PEM)")
	f.BoolVar(&cfg.noRevocation, "no-revocation-check", false, "verify without CRLs: a revoked PCK certificate or CA then passes (only for quotes whose CRLs are not at hand)")
	for _, name := range []string{"quote", "tcb-info", "tcb-chain", "qe-identity"} {
		if err := cmd.MarkFlagRequired(name); err != nil {
			panic(err) // a programming error: the flag is defined just above
		}
	}
	return cmd
}

func runQuoteVerify(cmd *cobra.Command, cfg *quoteVerifyConfig) error {
	read := func(flag, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		return b, nil
	}
	quote, err := read("quote", cfg.quote)
	if err != nil {
		return err
	}
	var c dcap.Collateral
	if c.TCBInfo, err = read("tcb-info", cfg.tcbInfo); err != nil {
		return err
	}
	if c.TCBSignChain, err = read("tcb-chain", cfg.tcbChain); err != nil {
		return err
	}
	if c.QEIdentity, err = read("qe-identity", cfg.qeIdentity); err != nil {
		return err
	}
	switch {
	case cfg.noRevocation && (cfg.pckCRL != "" || cfg.rootCRL != ""):
		return errors.New("--no-revocation-check with --pck-crl or --root-ca-crl: give the CRLs, or skip revocation, not both")
	case cfg.noRevocation:
		fmt.Fprintln(cmd.ErrOrStderr(), "attestmesh: quote verify: WARNING: revocation not checked (--no-revocation-check): a revoked PCK certificate or CA would pass")
	case cfg.pckCRL == "" || cfg.rootCRL == "":
		return errors.New("revocation needs --pck-crl and --root-ca-crl (from Intel PCS); --no-revocation-check verifies without them")
	default:
		if c.PCKCRL, err = read("pck-crl", cfg.pckCRL); err != nil {
			return err
		}
		if c.RootCACRL, err = read("root-ca-crl", cfg.rootCRL); err != nil {
			return err
		}
	}
	opts := dcap.Options{Root: dcap.IntelRoot(), CollateralMaxAge: cfg.maxAge, SkipRevocation: cfg.noRevocation}
	if cfg.root != "" {
		pemBytes, err := read("root", cfg.root)
		if err != nil {
			return err
		}
		if opts.Root, err = dcap.LoadRoot(pemBytes); err != nil {
			return fmt.Errorf("--root: %w", err)
		}
	}
	if cfg.at < 0 {
		return fmt.Errorf("--at: got %d, want Unix seconds >= 0", cfg.at)
	}
	if cfg.at != 0 {
		opts.Now = time.Unix(cfg.at, 0)
	}
	if cfg.maxAge < 0 {
		return fmt.Errorf("--collateral-max-age: got %s, want a positive duration or 0", cfg.maxAge)
	}
	id, err := dcap.Verify(quote, c, opts)
	if err != nil {
		return err
	}
	revocation := "checked"
	if cfg.noRevocation {
		revocation = "not checked"
	}
	out, err := json.MarshalIndent(struct {
		*dcap.Identity
		Revocation string `json:"revocation"`
	}{id, revocation}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
	return err
}
