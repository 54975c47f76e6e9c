package controlplane

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Store keys of the control plane's own state (values sealed by the encrypted store).
const (
	keyAuthority = "controlplane/authority"
	keyPlatform  = "controlplane/sim-platform"
	// keyAttestationMAC keys the attestation API's stateless nonces and sidecar grants.
	keyAttestationMAC = "controlplane/attestation-mac-key"
)

// Config is the control plane's configuration; the `attestmesh controlplane` flags fill it.
type Config struct {
	DataDir string
	// Store is where the encrypted store lives: empty for the embedded bbolt file under
	// DataDir (one replica), or "etcd://host:port[,host:port...]" for several replicas.
	Store string
	// EtcdCAFile, EtcdCertFile and EtcdKeyFile authenticate etcd and the control plane to each
	// other (PEM files); required unless every endpoint is on loopback.
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	StoreKeyFile                          string // empty: ATTESTMESH_STORE_KEY
	// StoreKey, when set, is the store key itself (for `attestmesh up`, which keeps it in
	// memory only); it takes precedence over StoreKeyFile.
	StoreKey *store.Key
	// StoreAnchor keeps the store's generation outside the data directory, so that an older
	// copy of the store put back in place is refused: a file path, or
	// "kubernetes-secret:NAMESPACE/NAME" for a Secret the control plane may get and patch.
	// Empty: the file "<store key file>.generation" when the key comes from a file; none (and a
	// warning) when it comes from the environment. "none" disables the check.
	StoreAnchor string
	// AllowStoreRollback opens a store older than its anchor (a backup restored on purpose).
	AllowStoreRollback bool
	// RecoveryKeyFiles are the operator's recovery public keys (PEM; RSA of 3072 bits or more,
	// X25519 or P-256): the store key is also sealed to them, as a recovery record in the store,
	// so that RecoveryThreshold of their holders can bring it back (`attestmesh recover`). The
	// record is sealed again whenever the keys or the threshold change.
	RecoveryKeyFiles []string
	// RecoveryThreshold is how many recovery keys it takes; 0 means 1.
	RecoveryThreshold int
	// RemoveRecoveryRecord removes the store's recovery record. Without it, a record is kept
	// when no recovery keys are given: a start with a forgotten flag must not throw away the
	// way back.
	RemoveRecoveryRecord bool
	TrustDomain          string
	// Limits bound what one client can make the CAS store and compute.
	Limits cas.Limits
	// ClientRate and ClientBurst bound the management API requests of each client identity (and
	// of each address without one); zero takes mgmt's defaults, a negative rate none.
	ClientRate  float64
	ClientBurst int
	// MgmtClientCAFile, when set, is a PEM file of CA certificates: the management API then
	// accepts only client certificates that chain to one of them (anonymous requests still reach
	// the public endpoints). Without it any self-made certificate is a client identity, which
	// costs nothing to make: on a control plane shared by teams that do not trust each other,
	// issue their client certificates from such a CA.
	MgmtClientCAFile string

	MgmtAddr    string // management API (HTTPS)
	AttestAddr  string // attestation API (gRPC over TLS)
	XDSAddr     string // xDS (gRPC, mTLS)
	MetricsAddr string // Prometheus metrics (HTTP)
	// WebhookAddr serves the sidecar-injector webhook (HTTPS) when InjectorImage is set.
	WebhookAddr string
	// InjectorImage is the attestmesh image the injector adds to pods; empty disables the
	// webhook.
	InjectorImage string
	// InjectorAttestAddr and InjectorLASAddr are the attestation API and LAS as pods reach
	// them (e.g. the control plane's Service names); empty means the advertised host.
	InjectorAttestAddr string
	InjectorLASAddr    string
	// WebhookCertFile and WebhookKeyFile, when set, are the webhook's TLS certificate and key
	// (cert-manager or a user-supplied Secret), reloaded when they change; otherwise the
	// webhook serves the control plane's own certificate.
	WebhookCertFile, WebhookKeyFile string
	// WebhookConfigName, when set and running in a cluster, is the
	// MutatingWebhookConfiguration whose caBundle the control plane patches with its CA.
	WebhookConfigName string
	// Kubernetes follows the cluster the control plane runs in (in-cluster credentials): the
	// ready pods of injected workloads become the endpoints of Kubernetes mesh registrations.
	Kubernetes bool
	// Kubeconfig, with Kubernetes, is a kubeconfig file to use instead of the pod's service
	// account (a control plane outside the cluster).
	Kubeconfig string
	// AdvertiseAddr is the host that workloads use to reach this control plane; it goes into
	// the server certificate and the xDS address told to sidecars.
	AdvertiseHost string
	// AdvertiseXDS, when set, is the xDS address told to sidecars instead: every replica's
	// ("host:port,host:port,...") or one name with several addresses ("dns:///name:port"), so
	// that sidecars fail over between replicas.
	AdvertiseXDS string
	ServerNames  []string // extra DNS names for the server certificate

	SVIDTTL time.Duration

	// Simulation enables the simulated platform and its LAS on LASAddr.
	Simulation bool
	LASAddr    string
	// CollateralDir holds hardware collateral (see attestation.DirCollateral); empty
	// disables hardware attestation.
	CollateralDir string
	// SidecarBinary is measured to accept sidecars in simulation mode when a session names no
	// sidecar measurement; empty means DefaultSidecarBinary of this executable.
	SidecarBinary string
	// SelfAttestation says where the control plane's own evidence (GET /v1/attestation, see
	// controlplane/evidence) comes from: SelfAttestGramine (SGX quotes from Gramine's
	// attestation device at AttestationDevice), SelfAttestSimulation (the simulated platform,
	// over this binary's measurement; needs Simulation), SelfAttestNone, or SelfAttestAuto
	// (the default, also ""): Gramine's device when it is there, else simulation with
	// Simulation, else none.
	SelfAttestation string
	// AttestationDevice is Gramine's attestation directory (default gramine.DefaultDir).
	AttestationDevice string

	Logger *slog.Logger
	// Ready, when set, is called once every listener is bound, with the bound addresses.
	Ready func(Addrs)
}

// Addrs are the bound addresses (useful with port 0).
type Addrs struct {
	Mgmt, Attest, XDS, Metrics, LAS, Webhook string
	// BundlePEM is the control plane's CA bundle, to pin in clients.
	BundlePEM []byte
}

// Validate checks the configuration at once and returns every problem it finds, joined, each
// naming the flag that fixes it.
func (cfg *Config) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if cfg.DataDir == "" {
		add("--data-dir is required")
	}
	if cfg.Store != "" {
		if _, err := etcdConfig(*cfg); err != nil {
			add("%v", err)
		}
	}
	if (cfg.EtcdCertFile == "") != (cfg.EtcdKeyFile == "") {
		add("--etcd-cert and --etcd-key go together")
	}
	if _, err := spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
		add("--trust-domain %q: %v", cfg.TrustDomain, err)
	}
	addr := func(flag, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			add("%s %q: want host:port (a port of 0 picks one): %v", flag, v, err)
		}
	}
	addr("--mgmt-addr", cfg.MgmtAddr)
	addr("--attest-addr", cfg.AttestAddr)
	addr("--xds-addr", cfg.XDSAddr)
	addr("--metrics-addr", cfg.MetricsAddr)
	if cfg.InjectorImage != "" {
		addr("--webhook-addr", cfg.WebhookAddr)
	}
	if cfg.Simulation && cfg.LASAddr == "" {
		add("--las-addr is required with --simulation")
	}
	switch cfg.SelfAttestation {
	case "", SelfAttestAuto, SelfAttestGramine, SelfAttestNone:
	case SelfAttestSimulation:
		if !cfg.Simulation {
			add("--self-attestation simulation needs --simulation (the simulated platform quotes the control plane)")
		}
	default:
		add("--self-attestation %q: want auto, gramine, simulation or none", cfg.SelfAttestation)
	}
	if p := anchorFile(*cfg); p != "" && cfg.DataDir != "" && within(p, cfg.DataDir) {
		add("--store-anchor %s: the anchor must live outside --data-dir %s (beside the store key): a restored copy of the data "+
			"directory would bring its own anchor back with it", p, cfg.DataDir)
	}
	if _, err := cfg.recoveryKeys(); err != nil {
		add("%v", err)
	}
	if cfg.MgmtClientCAFile != "" {
		if _, err := loadCertPool(cfg.MgmtClientCAFile); err != nil {
			add("--mgmt-client-ca %s: %v", cfg.MgmtClientCAFile, err)
		}
	}
	if (cfg.WebhookCertFile == "") != (cfg.WebhookKeyFile == "") {
		add("--webhook-cert-file and --webhook-key-file go together")
	}
	if cfg.SVIDTTL < 0 {
		add("--svid-ttl %s: must not be negative (0: the default, %s)", cfg.SVIDTTL, attestation.DefaultSVIDTTL)
	}
	for flag, v := range map[string]int{
		"--max-secrets-per-session": cfg.Limits.MaxSecrets, "--max-session-bytes": cfg.Limits.MaxGeneratedBytes,
		"--max-new-rsa-keys": cfg.Limits.MaxNewRSAKeys, "--max-sessions-per-client": cfg.Limits.MaxSessionsPerClient,
		"--max-meshes-per-client": cfg.Limits.MaxMeshesPerClient,
		"--client-burst":          cfg.ClientBurst,
	} {
		if v < 0 {
			add("%s %d: must not be negative", flag, v)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	return fmt.Errorf("controlplane: invalid configuration: %s", strings.Join(problems, "; "))
}

func (cfg *Config) logger() *slog.Logger {
	if cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return cfg.Logger
}

// trustDomain is the parsed trust domain of a validated configuration.
func (cfg *Config) trustDomain() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
}

// anchorFile is the file that will hold the store's rollback anchor, "" when it is not a file.
func anchorFile(cfg Config) string {
	switch a := cfg.StoreAnchor; {
	case a == "none" || strings.HasPrefix(a, anchorSecretPrefix):
		return ""
	case a != "":
		return a
	case cfg.StoreKeyFile != "" && cfg.StoreKey == nil:
		return cfg.StoreKeyFile + ".generation"
	}
	return ""
}

// within reports whether path is dir or lies under it, symlinks resolved (a data directory
// reached through a link is still the data directory). A path that cannot be resolved counts
// as inside: the check refuses rather than lets pass.
func within(path, dir string) bool {
	in, err := store.Within(path, dir)
	return err != nil || in
}

// SidecarName is the file name of the sidecar build of attestmesh (make build): the proxy,
// launch, install and measure verbs without the control plane's packages. The image holds it
// beside attestmesh.
const SidecarName = "attestmesh-sidecar"

// DefaultSidecarBinary returns SidecarName in the directory of exe when that is a regular
// file, else exe: the sidecar build beside attestmesh is what workloads run.
func DefaultSidecarBinary(exe string) string {
	lean := filepath.Join(filepath.Dir(exe), SidecarName)
	if st, err := os.Stat(lean); err == nil && st.Mode().IsRegular() {
		return lean
	}
	return exe
}
