package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

func newQuoteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quote",
		Short: "Work with Intel SGX DCAP quotes",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "verify",
		Short: "Verify a DCAP quote offline against its collateral",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("quote verify: not implemented yet")
		},
	})
	return cmd
}
