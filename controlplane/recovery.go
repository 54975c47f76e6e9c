package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/attestmesh/attestmesh/controlplane/recovery"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// maxKeyFile bounds a recovery key file.
const maxKeyFile = 64 << 10

// recoveryKeys loads the recovery public keys and checks them with the threshold; each problem
// names the flag that fixes it.
func (cfg *Config) recoveryKeys() ([]*recovery.PublicKey, error) {
	switch {
	case cfg.RecoveryThreshold < 0:
		return nil, fmt.Errorf("--recovery-threshold %d: must not be negative", cfg.RecoveryThreshold)
	case len(cfg.RecoveryKeyFiles) == 0 && cfg.RecoveryThreshold > 0:
		return nil, fmt.Errorf("--recovery-threshold %d needs --recovery-key", cfg.RecoveryThreshold)
	case len(cfg.RecoveryKeyFiles) > 0 && cfg.RemoveRecoveryRecord:
		return nil, errors.New("--remove-recovery-record and --recovery-key exclude each other")
	case len(cfg.RecoveryKeyFiles) == 0:
		return nil, nil
	}
	keys := make([]*recovery.PublicKey, 0, len(cfg.RecoveryKeyFiles))
	for _, f := range cfg.RecoveryKeyFiles {
		b, err := readLimited(f, maxKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--recovery-key %s: %w", f, err)
		}
		k, err := recovery.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("--recovery-key %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	if err := recovery.CheckKeys(keys, cfg.recoveryThreshold()); err != nil {
		return nil, fmt.Errorf("--recovery-key, --recovery-threshold: %w", err)
	}
	return keys, nil
}

func (cfg *Config) recoveryThreshold() int { return max(cfg.RecoveryThreshold, 1) }

// keepRecovery brings the store's recovery record in line with the configuration: sealed to
// the recovery keys with the threshold (sealed again when either changed, or when the stored
// record does not authenticate under key), kept as it is when no keys are given, removed only
// when RemoveRecoveryRecord says so. Several replicas may do this at once: a record that moved
// in between is read again.
func keepRecovery(ctx context.Context, cfg Config, st *store.EncryptedBackend, key store.Key, log *slog.Logger) error {
	keys, err := cfg.recoveryKeys()
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	log = log.With("subsystem", "recovery")
	for range 8 {
		raw, err := st.RecoveryRecord(ctx)
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		cur, problem := storedRecord(raw, key)
		switch {
		case cfg.RemoveRecoveryRecord:
			if raw == nil {
				log.Info("no recovery record to remove")
				return nil
			}
			err = st.SetRecoveryRecord(ctx, raw, nil)
			if err == nil {
				attrs := []any{}
				if cur != nil {
					attrs = recordAttrs(cur)
				}
				log.Warn("recovery record removed, as --remove-recovery-record says: a lost store key can no longer be recovered "+
					"from this store (copies of the old record still recover it: the store key is the same)", attrs...)
				return nil
			}
		case len(keys) == 0:
			switch {
			case raw == nil:
				log.Info("no recovery keys: a lost store key cannot be recovered (see --recovery-key)")
			case cur == nil:
				log.Warn("the store's recovery record is of no use ("+problem+"); give --recovery-key to seal a new one, "+
					"or --remove-recovery-record", "record_bytes", len(raw))
			default:
				log.Warn("recovery record kept, although no --recovery-key was given: it still recovers the store key; "+
					"pass the same --recovery-key flags to keep it current, or --remove-recovery-record to remove it", recordAttrs(cur)...)
			}
			return nil
		default:
			if cur != nil && cur.SealedFor(keys, cfg.recoveryThreshold()) {
				log.Info("recovery record current", recordAttrs(cur)...)
				return nil
			}
			next, err := recovery.Seal(key, keys, cfg.recoveryThreshold())
			if err != nil {
				return fmt.Errorf("controlplane: %w", err)
			}
			err = st.SetRecoveryRecord(ctx, raw, next.Marshal())
			if err == nil {
				logSealed(log, raw, cur, problem, next)
				return nil
			}
		}
		if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("controlplane: %w", err)
		}
		// Another replica wrote the record meanwhile: look again.
	}
	return errors.New("controlplane: the recovery record keeps changing (replicas started with different --recovery-key flags?)")
}

// storedRecord parses and authenticates the stored record: nil and why when it is absent or of
// no use.
func storedRecord(raw []byte, key store.Key) (*recovery.Record, string) {
	if raw == nil {
		return nil, "none"
	}
	r, err := recovery.ParseRecord(raw)
	if err != nil {
		return nil, err.Error()
	}
	if err := r.Authenticate(key); err != nil {
		return nil, "it does not authenticate under this store key: changed, or copied from another store"
	}
	return r, ""
}

func logSealed(log *slog.Logger, raw []byte, cur *recovery.Record, problem string, next *recovery.Record) {
	attrs := recordAttrs(next)
	switch {
	case raw == nil:
		log.Info("recovery record sealed: the store key is now also sealed to the recovery keys", attrs...)
	case cur == nil:
		log.Warn("recovery record sealed again: the stored one was of no use ("+problem+")", attrs...)
	default:
		added, removed := diffKeys(cur.Keys(), next.Keys())
		attrs = append(attrs, "previous_record", cur.ID().String(), "previous_threshold", cur.Threshold(),
			"keys_added", added, "keys_removed", removed)
		msg := "recovery record sealed again: the recovery keys or the threshold changed"
		if len(removed) > 0 || next.Threshold() > cur.Threshold() {
			// The store key stays the same, so an old copy of the record still opens with the
			// old keys: say so where the operator looks.
			msg += "; copies of the previous record (exports, backups of the store) still recover the store key with " +
				"the previous keys and threshold"
			log.Warn(msg, attrs...)
			return
		}
		log.Info(msg, attrs...)
	}
}

func recordAttrs(r *recovery.Record) []any {
	return []any{"record", r.ID().String(), "threshold", r.Threshold(), "keys", fingerprints(r.Keys())}
}

func fingerprints(fps []recovery.Fingerprint) []string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = f.String()
	}
	return out
}

func diffKeys(before, after []recovery.Fingerprint) (added, removed []string) {
	for _, f := range after {
		if !slices.Contains(before, f) {
			added = append(added, f.String())
		}
	}
	for _, f := range before {
		if !slices.Contains(after, f) {
			removed = append(removed, f.String())
		}
	}
	return added, removed
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimited(f, limit)
}

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		clear(b)
		return nil, fmt.Errorf("longer than %d bytes", limit)
	}
	return b, nil
}
