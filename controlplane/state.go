package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/kube"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The control plane's own state in the store: its CA, its simulated platform, the key of the
// attestation API's nonces and grants; and the store itself.

// anchorSecretPrefix starts a --store-anchor that names a Kubernetes Secret.
const anchorSecretPrefix = "kubernetes-secret:" //nolint:gosec // G101: a scheme name, not a credential

// storeAnchor returns the store's rollback anchor from cfg (nil: none).
func storeAnchor(cfg Config, log *slog.Logger) (store.Anchor, error) {
	const secretPrefix = anchorSecretPrefix
	switch a := cfg.StoreAnchor; {
	case a == "none":
		log.Warn("store rollback check disabled (--store-anchor none): an older copy of the store put back in place would go unnoticed")
		return nil, nil
	case strings.HasPrefix(a, secretPrefix):
		ns, name, ok := strings.Cut(strings.TrimPrefix(a, secretPrefix), "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("controlplane: --store-anchor %q: want kubernetes-secret:NAMESPACE/NAME", a)
		}
		api, err := kube.InCluster()
		if err != nil {
			return nil, fmt.Errorf("controlplane: --store-anchor %q: %w", a, err)
		}
		return &kube.SecretAnchor{API: api, Namespace: ns, Name: name}, nil
	case a != "":
		return &store.FileAnchor{Path: a}, nil
	case cfg.StoreKeyFile != "" && cfg.StoreKey == nil:
		return &store.FileAnchor{Path: cfg.StoreKeyFile + ".generation"}, nil
	default:
		if cfg.StoreKey == nil {
			log.Warn("store rollback check off: the store key comes from the environment, so there is no place beside it for the store's generation; give --store-anchor FILE (outside --data-dir)")
		}
		return nil, nil
	}
}

func anchorName(a store.Anchor) string {
	if a == nil {
		return "none"
	}
	return a.String()
}

// loadOrCreate returns the record under key, creating it with create on the first start. When
// several control planes start at once, the first writer wins and the others load what it
// wrote: the CA, the simulated platform and the MAC key exist once.
func loadOrCreate(ctx context.Context, st store.Backend, key string, create func() ([]byte, error)) ([]byte, error) {
	for range 4 {
		b, err := st.Get(ctx, key)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("controlplane: read %s: %w", key, err)
		}
		b, err = create()
		if err != nil {
			return nil, fmt.Errorf("controlplane: %s: %w", key, err)
		}
		err = st.CompareAndSwap(ctx, key, nil, b)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("controlplane: store %s: %w", key, err)
		}
		// Another replica created it first: load its.
	}
	return nil, fmt.Errorf("controlplane: %s keeps changing", key)
}

func loadOrCreateAuthority(ctx context.Context, st store.Backend, td spiffeid.TrustDomain) (*ca.Authority, error) {
	raw, err := loadOrCreate(ctx, st, keyAuthority, func() ([]byte, error) {
		a, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: td})
		if err != nil {
			return nil, err
		}
		return a.MarshalPEM()
	})
	if err != nil {
		return nil, err
	}
	a, err := ca.LoadAuthority(raw, ca.AuthorityConfig{TrustDomain: td})
	if err != nil {
		return nil, fmt.Errorf("controlplane: stored CA: %w", err)
	}
	return a, nil
}

// loadOrCreateSecret returns the random secret of n bytes stored under key, creating it on the
// first start (sealed by the store like everything else).
func loadOrCreateSecret(ctx context.Context, st store.Backend, key string, n int) ([]byte, error) {
	b, err := loadOrCreate(ctx, st, key, func() ([]byte, error) {
		b := make([]byte, n)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, fmt.Errorf("controlplane: stored %s is %d bytes, want %d", key, len(b), n)
	}
	return b, nil
}

func loadOrCreatePlatform(ctx context.Context, st store.Backend) (*sim.Platform, error) {
	raw, err := loadOrCreate(ctx, st, keyPlatform, func() ([]byte, error) {
		p, err := sim.NewPlatform(rand.Reader, sim.PlatformOptions{})
		if err != nil {
			return nil, err
		}
		return p.Marshal()
	})
	if err != nil {
		return nil, err
	}
	p, err := sim.UnmarshalPlatform(raw)
	if err != nil {
		return nil, fmt.Errorf("controlplane: stored simulated platform: %w", err)
	}
	return p, nil
}

// openedStore is the control plane's encrypted store and, on etcd, the watch that tells it of
// other replicas' writes.
type openedStore struct {
	*store.EncryptedBackend
	// watch reports changes made by any replica until ctx is done; nil for the embedded store,
	// which only this process writes.
	watch func(ctx context.Context, onChange func(keys []string)) error
}

// The CAS keeps the sessions it looked up while the store's stamp holds (cas.Stamper).
var _ cas.Stamper = (*openedStore)(nil)

// openStore opens the encrypted store, on the embedded bbolt file under cfg.DataDir or on
// etcd (cfg.Store), with its key and rollback anchor. Closing it closes the engine.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (*openedStore, error) {
	var key store.Key
	if cfg.StoreKey != nil {
		key = *cfg.StoreKey
	} else {
		var err error
		if key, err = store.LoadKey(store.KeyConfig{File: cfg.StoreKeyFile, DataDir: cfg.DataDir}); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	anchor, err := storeAnchor(cfg, log)
	if err != nil {
		return nil, err
	}
	var (
		engine store.Engine
		out    = &openedStore{}
		where  string
	)
	if cfg.Store == "" {
		bolt, err := store.OpenBolt(store.BoltConfig{Dir: cfg.DataDir})
		if err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		engine, where = bolt, "bbolt "+cfg.DataDir
	} else {
		ecfg, err := etcdConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		ecfg.Logger = log.With("subsystem", "store")
		etcd, err := store.OpenEtcd(ctx, ecfg)
		if err != nil {
			return nil, fmt.Errorf("controlplane: --store %s: %w", cfg.Store, err)
		}
		engine, where, out.watch = etcd, "etcd "+etcd.Endpoints(), etcd.Watch
	}
	st, err := store.Open(ctx, engine, key, store.Options{Anchor: anchor, AllowRollback: cfg.AllowStoreRollback, Logger: log.With("subsystem", "store")})
	if err != nil {
		_ = engine.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	out.EncryptedBackend = st
	log.Info("store open", "engine", where, "generation", st.Generation(), "rollback_anchor", anchorName(anchor))
	if err := keepRecovery(ctx, cfg, st, key, log); err != nil {
		_ = st.Close()
		return nil, err
	}
	return out, nil
}

// etcdConfig reads --store etcd://... and the etcd client certificate flags; its errors name
// the flag.
func etcdConfig(cfg Config) (store.EtcdConfig, error) {
	var tlsCfg *tls.Config
	if cfg.EtcdCertFile != "" || cfg.EtcdCAFile != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.EtcdCAFile != "" {
			pool, err := loadCertPool(cfg.EtcdCAFile)
			if err != nil {
				return store.EtcdConfig{}, fmt.Errorf("--etcd-ca %s: %w", cfg.EtcdCAFile, err)
			}
			tlsCfg.RootCAs = pool
		}
		if cfg.EtcdCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.EtcdCertFile, cfg.EtcdKeyFile)
			if err != nil {
				return store.EtcdConfig{}, fmt.Errorf("--etcd-cert %s, --etcd-key %s: %w", cfg.EtcdCertFile, cfg.EtcdKeyFile, err)
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	return store.ParseEtcdURL(cfg.Store, tlsCfg)
}

// openEngine opens the durable engine under the encrypted store: today the embedded bbolt file
// under dataDir. readOnly opens an existing store without creating or changing anything (for
// `attestmesh recover`, which must never write to the store it recovers).
func openEngine(dataDir string, readOnly bool) (store.Engine, error) {
	b, err := store.OpenBolt(store.BoltConfig{Dir: dataDir, ReadOnly: readOnly})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return b, nil
}
