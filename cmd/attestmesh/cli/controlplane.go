//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/gramine"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
)

// defaultDataDir is the control plane's --data-dir default (and that of `recover`).
const defaultDataDir = "/var/lib/attestmesh"

func newControlPlaneCmd() *cobra.Command {
	var cfg controlplane.Config
	var level logLevel
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane: management API, attestation API, xDS, metrics",
		Long: `controlplane runs the attestmesh control plane (the CAS): it keeps sessions and their
secrets in an encrypted store under --data-dir, attests workloads, issues X.509-SVIDs from its
CA, and serves:

  management API   HTTPS      --mgmt-addr     (default :8081)
  attestation API  gRPC/TLS   --attest-addr   (default :18765)
  xDS              gRPC/mTLS  --xds-addr      (default :18000)
  metrics          HTTP       --metrics-addr  (default :9102)
  injector webhook HTTPS      --webhook-addr  (default :9443; with --injector-image)

The store key (32 bytes, hex) comes from --store-key-file or $ATTESTMESH_STORE_KEY; it must
not live inside --data-dir. Create one with:  head -c32 /dev/urandom | xxd -p -c64 > key; chmod 600 key
Every write raises the store's generation, kept beside the key (--store-anchor): a store.db
older than it (a restored backup) is refused until --allow-store-rollback says it is wanted.

Losing the store key loses the store. With --recovery-key (repeatable) the store key is also
sealed to the operator's recovery public keys, as a recovery record in the store: any
--recovery-threshold of their holders can bring it back with 'attestmesh recover'. Changing
the keys or the threshold seals the record again at the next start (logged); starting without
--recovery-key keeps the record as it is (logged), and --remove-recovery-record removes it.

--simulation enables the simulated SGX platform and its local attestation service (LAS) on
--las-addr: quotes it signs are accepted only by sessions with
security.attestation.mode: simulation, and every identity from it is marked tee=simulation.
Hardware quotes need Intel collateral in --collateral-dir (tcb_info_<FMSPC>.json,
qe_identity.json, tcb_chain.pem).

The control plane attests itself: GET /v1/attestation?nonce=HEX on the management API serves
a quote whose REPORTDATA binds its CA's public key and the caller's nonce, which
"attestmesh controlplane verify" checks before writing the CA bundle to pin. The quote comes
from Gramine's /dev/attestation when the control plane runs in an SGX enclave under Gramine,
else, with --simulation, from its own simulated platform over the SHA-256 of its binary (a
drill: no hardware guarantee); --self-attestation chooses.

The CA bundle is also written to <data-dir>/ca.pem (and, in simulation, the simulated root to
<data-dir>/simulated-root.pem). Clients pin the bundle with --ca-file, best as
"attestmesh controlplane verify --out" wrote it.`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			cfg.Logger = newLogger(level)
			return controlplane.Run(ctx, cfg)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", defaultDataDir, "directory of the embedded encrypted store")
	f.StringVar(&cfg.Store, "store", "", "where the encrypted store lives: empty for the embedded file under --data-dir (one replica), "+
		"or etcd://host:port[,host:port...] for several replicas")
	f.StringVar(&cfg.EtcdCAFile, "etcd-ca", "", "PEM CA bundle that signed the etcd members' certificates")
	f.StringVar(&cfg.EtcdCertFile, "etcd-cert", "", "PEM client certificate for etcd")
	f.StringVar(&cfg.EtcdKeyFile, "etcd-key", "", "PEM private key of --etcd-cert")
	f.StringVar(&cfg.StoreKeyFile, "store-key-file", "", "file holding the store key (else $ATTESTMESH_STORE_KEY)")
	f.StringVar(&cfg.StoreAnchor, "store-anchor", "", "where the store's generation is kept, outside --data-dir, so that an older copy of the store is refused: "+
		"a file, or kubernetes-secret:NAMESPACE/NAME (default: <store key file>.generation; none disables the check)")
	f.BoolVar(&cfg.AllowStoreRollback, "allow-store-rollback", false, "open a store older than its anchor once (a backup restored on purpose)")
	f.StringArrayVar(&cfg.RecoveryKeyFiles, "recovery-key", nil, "recovery public key (PEM: RSA of 3072 bits or more, X25519 or P-256): the store key is also sealed "+
		"to it, for 'attestmesh recover' (repeatable)")
	f.IntVar(&cfg.RecoveryThreshold, "recovery-threshold", 0, "how many of the recovery keys it takes to recover the store key (default 1)")
	f.BoolVar(&cfg.RemoveRecoveryRecord, "remove-recovery-record", false, "remove the store's recovery record (without it, a record is kept "+
		"when no --recovery-key is given)")
	f.IntVar(&cfg.Limits.MaxSecrets, "max-secrets-per-session", cas.DefaultMaxSecrets, "most secrets one session may hold")
	f.IntVar(&cfg.Limits.MaxGeneratedBytes, "max-session-bytes", cas.DefaultMaxGeneratedBytes, "most bytes of secret material kept per session")
	f.IntVar(&cfg.Limits.MaxNewRSAKeys, "max-new-rsa-keys", cas.DefaultMaxNewRSAKeys, "most RSA keys one create or update may generate")
	f.IntVar(&cfg.Limits.MaxSessionsPerClient, "max-sessions-per-client", cas.DefaultMaxSessionsPerClient, "most sessions one client identity may create")
	f.IntVar(&cfg.Limits.MaxMeshesPerClient, "max-meshes-per-client", cas.DefaultMaxMeshesPerClient, "most meshes one client identity may register")
	f.Float64Var(&cfg.ClientRate, "client-rate", mgmt.DefaultClientRate, "management API requests per second per client identity (and per address without one); negative: unlimited")
	f.IntVar(&cfg.ClientBurst, "client-burst", mgmt.DefaultClientBurst, "management API request burst per client identity")
	f.StringVar(&cfg.MgmtClientCAFile, "mgmt-client-ca", "", "PEM file of CA certificates: accept only management API client certificates issued by them "+
		"(default: any certificate, its key being the identity)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "attestmesh.local", "SPIFFE trust domain")
	f.StringVar(&cfg.MgmtAddr, "mgmt-addr", ":8081", "management API listen address")
	f.StringVar(&cfg.AttestAddr, "attest-addr", ":18765", "attestation API listen address")
	f.StringVar(&cfg.XDSAddr, "xds-addr", ":18000", "xDS listen address")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", ":9102", "Prometheus metrics listen address")
	f.StringVar(&cfg.WebhookAddr, "webhook-addr", ":9443", "sidecar-injector webhook listen address (HTTPS), served when --injector-image is set")
	f.StringVar(&cfg.InjectorImage, "injector-image", "", "attestmesh image that the injector adds to pods (empty: no webhook)")
	f.StringVar(&cfg.InjectorAttestAddr, "injector-attest-addr", "", "attestation API address as pods reach it (default: advertise host)")
	f.StringVar(&cfg.InjectorLASAddr, "injector-las-addr", "", "LAS address as pods reach it, in simulation (default: advertise host)")
	f.StringVar(&cfg.WebhookCertFile, "webhook-cert-file", "", "the webhook's TLS certificate (e.g. from cert-manager); default: the control plane's own")
	f.StringVar(&cfg.WebhookKeyFile, "webhook-key-file", "", "the webhook's TLS key, with --webhook-cert-file")
	f.StringVar(&cfg.WebhookConfigName, "webhook-config-name", "", "MutatingWebhookConfiguration whose caBundle to patch with the CA when running in a cluster")
	f.BoolVar(&cfg.Kubernetes, "kubernetes", false, "follow the Kubernetes cluster the control plane runs in: the ready pods of injected workloads are the endpoints of meshes that `attestmesh apply` registered (needs get, list, watch on pods and endpointslices)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "with --kubernetes: a kubeconfig to use instead of the pod's service account")
	f.StringVar(&cfg.AdvertiseHost, "advertise-host", "", "host name or IP workloads use to reach the control plane (default 127.0.0.1)")
	f.StringVar(&cfg.AdvertiseXDS, "advertise-xds", "", "xDS address(es) told to sidecars, for several replicas: host:port,host:port,... or dns:///name:port "+
		"(default: --advertise-host and this replica's xDS port)")
	f.StringArrayVar(&cfg.ServerNames, "server-name", nil, "extra DNS name for the control plane's certificate (repeatable)")
	f.DurationVar(&cfg.SVIDTTL, "svid-ttl", time.Hour, "lifetime of issued X.509-SVIDs")
	f.BoolVar(&cfg.Simulation, "simulation", false, "enable the simulated SGX platform and its LAS (no hardware guarantee)")
	f.StringVar(&cfg.LASAddr, "las-addr", sim.DefaultLASAddr, "LAS listen address in simulation (host:port or unix:/path)")
	f.StringVar(&cfg.CollateralDir, "collateral-dir", "", "Intel collateral for hardware quotes")
	f.StringVar(&cfg.SidecarBinary, "sidecar-binary", "", "the sidecar binary whose measurement sidecars of simulation-mode sessions must present when the session names none (default: "+controlplane.SidecarName+" beside this executable if there, else this executable)")
	f.StringVar(&cfg.SelfAttestation, "self-attestation", controlplane.SelfAttestAuto, "where the control plane's own evidence comes from: "+
		"gramine (/dev/attestation in an SGX enclave), simulation (its simulated platform; needs --simulation), none, or auto (the first of these that is there)")
	f.StringVar(&cfg.AttestationDevice, "attestation-device", gramine.DefaultDir, "Gramine's attestation pseudo-file directory")
	registerLogLevel(f, &level)
	cmd.AddCommand(newControlPlaneVerifyCmd())
	return cmd
}
