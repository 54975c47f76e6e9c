//go:build !attestmesh_sidecar

package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/fspf"
)

func newFSPFCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fspf",
		Short: "Protect an application's files: encrypt a directory tree for an attested service",
		Long: `fspf manages protected file systems. An encrypted tree can be read only by a service
whose session carries its key (fspf_key) and tag (fspf_tag); the launcher decrypts it into
memory after attestation and refuses to start the app when any file was changed, added,
removed or renamed.`,
	}
	cmd.AddCommand(newFSPFEncryptCmd())
	return cmd
}

func newFSPFEncryptCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "encrypt SRC DST",
		Short: "Encrypt the directory SRC into DST and print fspf_key and fspf_tag for the session",
		Long: `encrypt writes DST (a new or empty directory) with the same layout as SRC: every regular
file encrypted with AES-256-GCM under a key derived from a fresh random tree key and the
file's relative path, plus the manifest DST/.fspf (paths, modes, sizes and ciphertext hashes;
no secrets). SRC may hold only regular files and directories.

It prints two lines ready to paste into the service's entry in the session:

  fspf_key: <64 hex characters>   the tree key: secret, give it to the session only
  fspf_tag: <64 hex characters>   SHA-256 of the manifest: commits to the whole tree

Then set fspf_path to where DST will be, as the service sees it.`,
		Example: `  attestmesh fspf encrypt examples/flask-redis/app target/app-encrypted`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := args[0], args[1]
			key, tag, err := fspf.Encrypt(src, dst, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fspf_key: %s\nfspf_tag: %s\n", key.Hex(), tag)
			fmt.Fprintf(cmd.ErrOrStderr(), "encrypted %s into %s.\n"+
				"Next: in the service's session set fspf_path to the absolute path of %s as the service sees it,\n"+
				"and paste the two lines above. Keep fspf_key secret (it decrypts the tree); delete the\n"+
				"plaintext %s from images you ship.\n", src, dst, dst, src)
			return nil
		},
	}
}
