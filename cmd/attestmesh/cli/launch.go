package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/proxy/launch"
)

// workloadFlags are the flags of every verb that attests a workload (launch, proxy).
type workloadFlags struct {
	configID   string
	attestAddr string
	caFile     string
	lasAddr    string
	logLevel   logLevel
}

func (w *workloadFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&w.configID, "config-id", "", "SESSION/SERVICE this workload attests as (required)")
	f.StringVar(&w.attestAddr, "attest-addr", envOr("ATTESTMESH_ATTEST_ADDR", "127.0.0.1:18765"), "the control plane's attestation API ($ATTESTMESH_ATTEST_ADDR)")
	f.StringVar(&w.caFile, "ca-file", envOr("ATTESTMESH_CA_FILE", ""), "the control plane's CA bundle to pin ($ATTESTMESH_CA_FILE)")
	f.StringVar(&w.lasAddr, "las-addr", "", "the simulated platform's LAS (host:port or unix:/path; default $ATTESTMESH_LAS_ADDR or "+sim.DefaultLASAddr+")")
	registerLogLevel(f, &w.logLevel)
	_ = cmd.MarkFlagRequired("config-id")
}

// dial connects to the attestation API with quotes from the LAS; log gets the attempts that
// failed and are made again.
func (w *workloadFlags) dial(log *slog.Logger) (*attestapi.Client, error) {
	if w.caFile == "" {
		return nil, fmt.Errorf("--ca-file is required: the control plane's CA bundle")
	}
	pemBytes, err := os.ReadFile(w.caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	bundle, err := attestapi.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", w.caFile, err)
	}
	return attestapi.Dial(attestapi.ClientConfig{
		Addr: w.attestAddr, Bundle: bundle, Quotes: sim.Client{Addr: sim.ResolveLASAddr(w.lasAddr)}, Logger: log,
	})
}

func newLaunchCmd() *cobra.Command {
	var wf workloadFlags
	var noGrants bool
	cmd := &cobra.Command{
		Use:   "launch --config-id SESSION/SERVICE -- BINARY",
		Short: "Measure BINARY, attest it, and run it with the configuration and files of its session",
		Long: `launch does what SCONE's runtime does inside the enclave: it measures BINARY (the
simulated MRENCLAVE is its SHA-256), attests to the control plane with a fresh key, and only
then runs BINARY with the command arguments, environment and working directory of the
session's service (not those of the host). The session's injected files (TLS keys and
certificates, ...) and the decrypted protected file system appear at their policy paths for
the app only, on a tmpfs in a private mount namespace: never on disk, invisible to other
processes. Any failure refuses to start the app, with the reason. While the app runs, launch
hands the sidecar beside it (same pod or network namespace) the grant that lets it carry the
service's identity (--no-sidecar-grant: it has none).

Exit status: the app's; 128+N if signal N killed it; 1 when launch refused to start it.`,
		Example: `  attestmesh launch --config-id flask-redis/redis/redis --ca-file ca.pem -- /usr/bin/redis-server`,
		Args:    cobra.ExactArgs(1),
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			log := newLogger(wf.logLevel).With("config_id", wf.configID)
			client, err := wf.dial(log)
			if err != nil {
				return err
			}
			defer client.Close()
			code, err := launch.Run(ctx, launch.Options{
				ConfigID: wf.configID,
				Binary:   args[0],
				Attestor: launch.FromAttestation(client),
				Logger:   log,
				NoGrants: noGrants,
			})
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if code != 0 {
				return &exitError{code: code, err: fmt.Errorf("app exited with status %d", code)}
			}
			return nil
		}),
	}
	wf.register(cmd)
	cmd.Flags().BoolVar(&noGrants, "no-sidecar-grant", false, "do not hand a grant to a sidecar (the app has none)")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
