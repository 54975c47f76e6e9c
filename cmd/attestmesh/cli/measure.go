package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/measure"
)

func newMeasureCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "measure BINARY",
		Short: "Print the simulated MRENCLAVE of a binary (SHA-256 of the resolved file)",
		Long: `measure prints the simulated MRENCLAVE of BINARY: the SHA-256 of its bytes, after
following symlinks. It equals sha256sum of the resolved file, and it is what a session's
mrenclaves list must hold for a workload launched from that binary in simulation mode.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := measure.File(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), m.Hex())
			return nil
		},
	}
}
