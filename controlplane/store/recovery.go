package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
)

// recoveryRecord holds the store key sealed to the operator's recovery keys (package
// controlplane/recovery). It is the one reserved record that is not sealed under the store key:
// whoever lost the key must still read it. It authenticates itself (a MAC under a key derived
// from the store key, checked once the key is reconstructed), and stays out of the records'
// digest, like the other reserved records.
const recoveryRecord = reservedPrefix + "recovery"

// maxRecoveryRecord bounds the recovery record (255 shares of RSA-16384 ciphertexts fit).
const maxRecoveryRecord = 1 << 20

// RecoveryRecord returns the recovery record as stored, or nil when the store has none.
func (e *EncryptedBackend) RecoveryRecord(ctx context.Context) ([]byte, error) {
	return ReadRecoveryRecord(ctx, e.inner)
}

// SetRecoveryRecord replaces the recovery record old (nil: none) with rec (nil: remove it). When
// the record is no longer old (another replica changed it meanwhile) it fails with an error
// wrapping ErrConflict and changes nothing.
func (e *EncryptedBackend) SetRecoveryRecord(ctx context.Context, old, rec []byte) error {
	if len(rec) > maxRecoveryRecord {
		return fmt.Errorf("store: recovery record of %d bytes: at most %d", len(rec), maxRecoveryRecord)
	}
	if err := e.inner.Apply(ctx, []Cond{{Key: recoveryRecord, Value: old}}, []Write{{Key: recoveryRecord, Value: rec}}); err != nil {
		return fmt.Errorf("store: write recovery record: %w", err)
	}
	return nil
}

// ReadRecoveryRecord reads the recovery record from the engine under a store, without the store
// key. It returns nil when the store has none.
func ReadRecoveryRecord(ctx context.Context, eng Engine) ([]byte, error) {
	raw, err := eng.Get(ctx, recoveryRecord)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read recovery record: %w", err)
	}
	if len(raw) > maxRecoveryRecord {
		return nil, fmt.Errorf("store: recovery record of %d bytes: at most %d: %w", len(raw), maxRecoveryRecord, ErrCorrupt)
	}
	return raw, nil
}

// Status is what Verify found in a store.
type Status struct {
	// Generation is the store's generation (see Options.Anchor).
	Generation uint64
	// Records is the number of records (the reserved ones not counted).
	Records int
}

// Verify checks, reading only, that key is the key that sealed the store under eng and that its
// records match its sealed state: ErrWrongKey when the key check value does not open under key,
// ErrCorrupt when records do not match the digest. A store without a key check value (empty,
// or not written by attestmesh) is an error too. It does not compare the generation with an
// anchor: it knows none.
func Verify(ctx context.Context, eng Engine, key Key) (Status, error) {
	e, err := newBackend(eng, key, Options{})
	if err != nil {
		return Status{}, err
	}
	raw, err := eng.Get(ctx, checkRecord)
	if errors.Is(err, ErrNotFound) {
		return Status{}, errors.New("store: the store has no key check value: it is empty, or was not written by attestmesh's encrypted store")
	}
	if err != nil {
		return Status{}, fmt.Errorf("store: read key check value: %w", err)
	}
	if pt, err := e.open(checkRecord, raw); err != nil || !bytes.Equal(pt, checkPlaintext) {
		return Status{}, ErrWrongKey
	}
	stRaw, st, err := e.readState(ctx)
	if err != nil {
		return Status{}, err
	}
	records, err := eng.List(ctx, "")
	if err != nil {
		return Status{}, fmt.Errorf("store: list: %w", err)
	}
	var digest [sha256.Size]byte
	n := 0
	for _, kv := range records {
		if strings.HasPrefix(kv.Key, reservedPrefix) {
			continue
		}
		e.fold(&digest, kv.Key, kv.Value)
		n++
	}
	switch {
	case stRaw == nil && n > 0:
		return Status{Records: n}, fmt.Errorf("store: the store holds %d records but no sealed state: %w", n, ErrCorrupt)
	case stRaw != nil && digest != st.Digest:
		return Status{Records: n}, fmt.Errorf("store: the %d records do not match the store's sealed state (generation %d): %w", n, st.Generation, ErrCorrupt)
	}
	return Status{Generation: st.Generation, Records: n}, nil
}
