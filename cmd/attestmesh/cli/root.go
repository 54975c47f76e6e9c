// Package cli assembles the attestmesh command tree. Each verb lives in its own file and only
// parses flags into the config struct of the package that does the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// version is the attestmesh version, set at build time with
// -ldflags "-X github.com/attestmesh/attestmesh/cmd/attestmesh/cli.version=VERSION". It is part
// of the binary, so of its measurement: two builds with different versions measure differently.
var version = "dev"

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Run executes the attestmesh command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "attestmesh: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// withContext adapts the body of a verb that needs the command line's context to cobra's
// RunE, so that the body takes ctx as a parameter and passes it on. The context is Run's:
// ExecuteContext hands it to cobra, which gives it back as cmd.Context().
//
//nolint:contextcheck // not a new context: Run's ctx, carried through cobra, which the linter cannot follow
func withContext(run func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), cmd, args) }
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "attestmesh",
		Short: "attestmesh: a confidential service mesh with attested mTLS identities",
		Long: `attestmesh runs unmodified applications as attested workloads. A control plane holds
security policies (sessions), attests workloads (Intel SGX DCAP quotes, or simulated quotes
in the same format), injects secrets only after attestation, and pushes mTLS configuration
over xDS to sidecars whose SPIFFE identities exist only because attestation succeeded.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(verbs()...)
	return root
}
