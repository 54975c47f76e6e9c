//go:build !attestmesh_sidecar

package cli

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/attestmesh/attestmesh/controlplane"
)

func newRecoverCmd() *cobra.Command {
	var cfg controlplane.RecoverConfig
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Bring back a lost store key from the recovery keys given at install (k of n)",
		Long: `recover reconstructs a control plane's lost store key from its recovery record: the store key,
split with Shamir's secret sharing into one share per recovery key (--recovery-key on
attestmesh controlplane), any --recovery-threshold of which give it back.

It reads the record from the store under --data-dir (read-only: stop the control plane
first), or from etcd with --store etcd://... and the etcd client certificate (--etcd-ca,
--etcd-cert, --etcd-key: the replicas' own; they may keep running), takes the shares from the recovery private keys given with --key, or from the shares
the key holders made with 'attestmesh recover share' (--share; sealed shares are opened with
the --key they were sealed to), reconstructs the key, checks it against the record and against
the store itself, and writes it to --key-out: a new file, mode 0600 (never overwritten), or -
to print it, e.g. into a Kubernetes Secret:

  kubectl create secret generic attestmesh-store-key \
    --from-file=store-key=<(attestmesh recover --data-dir D --share a.pem --share b.pem --key me.pem --key-out -)

With too few shares, or with a key the record does not know, it says how many shares are
needed and which keys (by fingerprint) the record expects.

When the key holders are different people:
  1. whoever reaches the store:  attestmesh recover record --data-dir D --out record.json
     and makes a key for the shares' way back (it never leaves this machine):
       openssl genpkey -algorithm X25519 -out combine.pem
       openssl pkey -in combine.pem -pubout -out combine.pub.pem
     then sends record.json and combine.pub.pem to the holders (neither is secret);
  2. each holder:  attestmesh recover share --record record.json --key my-key.pem \
                     --to combine.pub.pem --out my-share.pem     (and sends my-share.pem back);
  3. whoever reaches the store:  attestmesh recover --data-dir D --key combine.pem \
                     --share alice-share.pem --share bob-share.pem --key-out /etc/attestmesh/store.key

An encrypted private key is read from standard input, decrypted on the fly:
  openssl pkey -in my-key.pem | attestmesh recover share ... --key -

See docs/operations.md, "Recovery".`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			cfg.Stdin, cfg.Stdout, cfg.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			return controlplane.Recover(ctx, cfg)
		}),
	}
	f := cmd.Flags()
	storeSourceFlags(f, &cfg.StoreSource, defaultDataDir, "directory of the embedded store whose key is lost (opened read-only)")
	f.StringArrayVar(&cfg.KeyFiles, "key", nil, "a recovery private key (PEM), or the private key that shares were sealed to; - reads standard input (repeatable)")
	f.StringArrayVar(&cfg.ShareFiles, "share", nil, "a file of shares from 'attestmesh recover share' (repeatable)")
	f.StringVar(&cfg.KeyOut, "key-out", "", "where to write the recovered store key: a new file (mode 0600), or - for standard output")
	cmd.AddCommand(newRecoverRecordCmd(), newRecoverShareCmd())
	return cmd
}

func newRecoverRecordCmd() *cobra.Command {
	var cfg controlplane.RecoveryRecordConfig
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Export the store's recovery record for the key holders (it holds no secret)",
		Long: `record reads the recovery record from the store under --data-dir (read-only) and writes it to
--out (default: standard output), with a summary on standard error: the record's ID, when it
was sealed, the threshold, and the fingerprints of the recovery keys it expects.

The record holds the store key's shares, each encrypted to one recovery key, and nothing
readable without those keys: send it to the key holders, who each run 'attestmesh recover share'.`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			cfg.Stdout, cfg.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return controlplane.RecoveryRecord(ctx, cfg)
		}),
	}
	f := cmd.Flags()
	storeSourceFlags(f, &cfg.StoreSource, defaultDataDir, "directory of the embedded store (opened read-only)")
	f.StringVarP(&cfg.Out, "out", "o", "-", "where to write the record: a new file, or - for standard output")
	return cmd
}

func newRecoverShareCmd() *cobra.Command {
	var cfg controlplane.RecoveryShareConfig
	cmd := &cobra.Command{
		Use:   "share",
		Short: "A key holder's step: decrypt your share of the store key from the recovery record",
		Long: `share decrypts the share sealed to your recovery key from the recovery record (--record, the
file 'attestmesh recover record' wrote; or --data-dir, the store itself) and writes it to --out
(default: standard output). Your private key never leaves your machine.

With --to COMBINER.pub.pem the share is sealed to the public key of whoever combines the
shares (RSA, X25519 or P-256), so it may travel over any channel: only that key opens it, and
only for this record. Without --to the share is in plaintext: threshold-many of them are the
store key.

An encrypted private key is read from standard input, decrypted on the fly:
  openssl pkey -in my-key.pem | attestmesh recover share --record record.json --key - --to combine.pub.pem`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			cfg.Stdin, cfg.Stdout, cfg.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			return controlplane.RecoveryShare(ctx, cfg)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.RecordFile, "record", "", "the recovery record from 'attestmesh recover record'")
	storeSourceFlags(f, &cfg.StoreSource, "", "or: the store's directory, when you can reach it (opened read-only)")
	f.StringVar(&cfg.KeyFile, "key", "", "your recovery private key (PEM); - reads standard input")
	f.StringVar(&cfg.To, "to", "", "public key (PEM) of whoever combines the shares: seal the share to it")
	f.StringVarP(&cfg.Out, "out", "o", "-", "where to write the share: a new file (mode 0600), or - for standard output")
	return cmd
}

// storeSourceFlags registers where recover's commands read the store: --data-dir, or --store
// etcd://... with the etcd client certificate (as the control plane takes them).
func storeSourceFlags(f *pflag.FlagSet, src *controlplane.StoreSource, dataDir, dataDirHelp string) {
	f.StringVar(&src.DataDir, "data-dir", dataDir, dataDirHelp)
	f.StringVar(&src.Store, "store", "", "the etcd store of several replicas instead (etcd://host:port[,host:port...]), read only")
	f.StringVar(&src.EtcdCAFile, "etcd-ca", "", "with --store: PEM CA bundle that signed the etcd members' certificates")
	f.StringVar(&src.EtcdCertFile, "etcd-cert", "", "with --store: PEM client certificate for etcd")
	f.StringVar(&src.EtcdKeyFile, "etcd-key", "", "with --store: PEM private key of --etcd-cert")
}
