package controlplane

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/ca"
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

func loadOrCreateAuthority(ctx context.Context, st store.Backend, td spiffeid.TrustDomain) (*ca.Authority, error) {
	raw, err := st.Get(ctx, keyAuthority)
	switch {
	case err == nil:
		a, err := ca.LoadAuthority(raw, ca.AuthorityConfig{TrustDomain: td})
		if err != nil {
			return nil, fmt.Errorf("controlplane: stored CA: %w", err)
		}
		return a, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("controlplane: read CA: %w", err)
	}
	a, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: td})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	pem, err := a.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := st.CompareAndSwap(ctx, keyAuthority, nil, pem); err != nil {
		return nil, fmt.Errorf("controlplane: store CA: %w", err)
	}
	return a, nil
}

// loadOrCreateSecret returns the random secret of n bytes stored under key, creating it on the
// first start (sealed by the store like everything else; the first writer wins when several
// control planes start at once).
func loadOrCreateSecret(ctx context.Context, st store.Backend, key string, n int) ([]byte, error) {
	for range 2 {
		b, err := st.Get(ctx, key)
		if err == nil {
			if len(b) != n {
				return nil, fmt.Errorf("controlplane: stored %s is %d bytes, want %d", key, len(b), n)
			}
			return b, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("controlplane: read %s: %w", key, err)
		}
		b = make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		err = st.CompareAndSwap(ctx, key, nil, b)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("controlplane: store %s: %w", key, err)
		}
	}
	return nil, fmt.Errorf("controlplane: %s keeps changing", key)
}

func loadOrCreatePlatform(ctx context.Context, st store.Backend) (*sim.Platform, error) {
	raw, err := st.Get(ctx, keyPlatform)
	switch {
	case err == nil:
		p, err := sim.UnmarshalPlatform(raw)
		if err != nil {
			return nil, fmt.Errorf("controlplane: stored simulated platform: %w", err)
		}
		return p, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("controlplane: read simulated platform: %w", err)
	}
	p, err := sim.NewPlatform(rand.Reader, sim.PlatformOptions{})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	data, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := st.CompareAndSwap(ctx, keyPlatform, nil, data); err != nil {
		return nil, fmt.Errorf("controlplane: store simulated platform: %w", err)
	}
	return p, nil
}

// openStore opens the encrypted store under cfg.DataDir with its key and rollback anchor.
// Closing it closes the bbolt file.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (*store.EncryptedBackend, error) {
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
	eng, err := openEngine(cfg.DataDir, false)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, eng, key, store.Options{Anchor: anchor, AllowRollback: cfg.AllowStoreRollback, Logger: log.With("subsystem", "store")})
	if err != nil {
		_ = eng.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	log.Info("store open", "generation", st.Generation(), "rollback_anchor", anchorName(anchor))
	if err := keepRecovery(ctx, cfg, st, key, log); err != nil {
		_ = st.Close()
		return nil, err
	}
	return st, nil
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
