package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KeyVersion is the version byte that starts every sealed record. It names the key that sealed the
// record, so that a later key rotation can tell old records from new ones.
const KeyVersion byte = 1

// reservedPrefix starts the keys that the encrypting layer keeps for itself; callers cannot use
// them and List does not return them.
const reservedPrefix = "\x00attestmesh/"

// checkRecord holds the key check value: a known plaintext sealed under the key.
const checkRecord = reservedPrefix + "store-key-check"

// stateRecord holds the sealed state: the store's generation and the digest of its records.
const stateRecord = reservedPrefix + "state"

var checkPlaintext = []byte("attestmesh store key check v1")

// aadPrefix domain-separates the additional authenticated data of store records.
const aadPrefix = "attestmesh/store/v1\x00"

// digestLabel derives the key of the record digest from the store key.
const digestLabel = "attestmesh/store/v1 record digest"

// anchorLag bounds how long Open waits for an anchor that records nothing while the store was
// written to (see checkAnchor) before it refuses the store.
const anchorLag = 3 * time.Second

// maxRetries bounds how often a write retries when only the sealed state moved under it (another
// replica wrote in between).
const maxRetries = 64

// Options configure Open.
type Options struct {
	// Anchor keeps the store's generation outside the data directory, so that an older copy of
	// the store put back in place is refused. Nil disables the check.
	Anchor Anchor
	// AllowRollback opens a store that is older than its anchor (a backup restored on purpose):
	// its generation is then raised past the anchor's, so the next start is normal again.
	AllowRollback bool
	// Logger receives what the store reports (an anchor that could not be raised, a restore
	// that was allowed); nil discards.
	Logger *slog.Logger
}

// EncryptedBackend seals every value with AES-256-GCM before it reaches the underlying Engine.
// Each write uses a fresh random 96-bit nonce; the record's key name and the key version are bound
// as additional authenticated data, so a value moved to another key name, or changed by a single
// bit, fails to open. Key names stay in plaintext. A sealed record is
//
//	KeyVersion (1 byte) || nonce (12 bytes) || ciphertext || GCM tag (16 bytes)
//
// Beside the records it keeps a sealed state, written in the same atomic batch as every record:
// a generation that grows with every write, and a digest, the XOR of HMAC-SHA-256 (under a key
// derived from the store key) of every record's name and sealed bytes. Open recomputes the
// digest, so records removed, changed back or copied in from another copy of the store are
// refused, and compares the generation with the Anchor, so that a whole older copy is refused
// too (see Options).
//
// EncryptedBackend is safe for concurrent use as far as the underlying Engine is; writes of one
// EncryptedBackend are serialized.
type EncryptedBackend struct {
	inner  Engine
	aead   cipher.AEAD
	macKey []byte
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex // serializes writes; guards state and stateRaw
	state    sealedState
	stateRaw []byte // the sealed state record as read or last written; nil when absent
	// gen is state.Generation, readable without mu (which a write holds over its round trip):
	// Stamp, on every attestation, must not wait for a write in progress.
	gen atomic.Uint64

	// stamped is the newest sealed state that Stamp opened: a stamp is opened once, when it
	// changes, and one older than it (or than this backend's own writes) is refused.
	stampedMu  sync.Mutex
	stamped    string
	stampedGen uint64
}

var _ Backend = (*EncryptedBackend)(nil)

// sealedState is the plaintext of the state record.
type sealedState struct {
	Generation uint64
	Digest     [sha256.Size]byte
}

func (s sealedState) marshal() []byte {
	b := make([]byte, 8, 8+len(s.Digest))
	binary.BigEndian.PutUint64(b, s.Generation)
	return append(b, s.Digest[:]...)
}

func unmarshalState(b []byte) (sealedState, error) {
	var s sealedState
	if len(b) != 8+len(s.Digest) {
		return s, fmt.Errorf("store: sealed state of %d bytes, want %d: %w", len(b), 8+len(s.Digest), ErrCorrupt)
	}
	s.Generation = binary.BigEndian.Uint64(b)
	copy(s.Digest[:], b[8:])
	return s, nil
}

// Encrypted wraps b so that every value is sealed under key; it is Open without an anchor.
func Encrypted(ctx context.Context, b Engine, key Key) (*EncryptedBackend, error) {
	return Open(ctx, b, key, Options{})
}

// Open wraps b so that every value is sealed under key. It checks the key against the check
// value stored by the first Open of this store and fails with ErrWrongKey when the store was
// sealed with another key; on an empty engine it stores the check value. It refuses a non-empty
// engine that has no check value (plaintext or foreign data). It then checks the sealed state:
// records that do not match its digest fail with ErrCorrupt, and a generation older than the
// anchor's, a written store whose anchor records nothing, and records without a sealed state
// (a store written by a version without it) fail with ErrRollback unless opts.AllowRollback.
func Open(ctx context.Context, b Engine, key Key, opts Options) (*EncryptedBackend, error) {
	e, err := newBackend(b, key, opts)
	if err != nil {
		return nil, err
	}
	if err := e.checkKey(ctx); err != nil {
		return nil, err
	}
	if err := e.loadState(ctx); err != nil {
		return nil, err
	}
	if err := e.checkAnchor(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// newBackend derives the sealing and digest keys; it reads and writes nothing.
func newBackend(b Engine, key Key, opts Options) (*EncryptedBackend, error) {
	if err := checkNonZero(key); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	mac := hmac.New(sha256.New, key[:])
	mac.Write([]byte(digestLabel))
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EncryptedBackend{inner: b, aead: aead, macKey: mac.Sum(nil), opts: opts, log: log}, nil
}

func (e *EncryptedBackend) checkKey(ctx context.Context) error {
	for range 2 {
		raw, err := e.inner.Get(ctx, checkRecord)
		if err == nil {
			pt, err := e.open(checkRecord, raw)
			if err != nil || !bytes.Equal(pt, checkPlaintext) {
				return ErrWrongKey
			}
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("store: read key check value: %w", err)
		}
		existing, err := e.inner.List(ctx, "")
		if err != nil {
			return fmt.Errorf("store: list: %w", err)
		}
		if slices.ContainsFunc(existing, func(kv KV) bool { return kv.Key == checkRecord }) {
			// Another opener (a replica starting at the same time) initialized the store
			// since the check value was looked for: check against its value.
			continue
		}
		if len(existing) > 0 {
			return fmt.Errorf("store: the store holds %d records but no key check value: refusing to use it "+
				"(it was not written by attestmesh's encrypted store)", len(existing))
		}
		err = e.inner.Apply(ctx, []Cond{{Key: checkRecord}}, []Write{{Key: checkRecord, Value: e.seal(checkRecord, checkPlaintext)}})
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("store: write key check value: %w", err)
		}
		// Another opener initialized the store at the same time: check against its value.
	}
	return errors.New("store: key check value keeps changing")
}

// loadState reads the sealed state and checks the records against its digest. The state and
// the records are read again when the state moved in between (another replica wrote).
func (e *EncryptedBackend) loadState(ctx context.Context) error {
	for range maxRetries {
		raw, st, err := e.readState(ctx)
		if err != nil {
			return err
		}
		records, err := e.inner.List(ctx, "")
		if err != nil {
			return fmt.Errorf("store: list: %w", err)
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
		again, _, err := e.readState(ctx)
		if err != nil {
			return err
		}
		if !bytes.Equal(raw, again) {
			continue
		}
		if raw == nil {
			// A new store gets its sealed state. A store with records but none was written by
			// a version before the sealed state, or had its state removed to hide a change:
			// only the operator can tell, so it opens only with AllowRollback.
			st = sealedState{Digest: digest}
			if n > 0 {
				if !e.opts.AllowRollback {
					return fmt.Errorf("%w: the store holds %d records but no sealed state: either it was written by a version of attestmesh "+
						"before the sealed state (then start once with --allow-store-rollback to seal it as it is), or its sealed state was "+
						"removed to hide changed records", ErrRollback, n)
				}
				st.Generation = 1
				e.log.WarnContext(ctx, "store: sealed state created for a store that had none, as --allow-store-rollback says", "records", n)
			}
			sealed := e.seal(stateRecord, st.marshal())
			err := e.inner.Apply(ctx, []Cond{{Key: stateRecord}}, []Write{{Key: stateRecord, Value: sealed}})
			if errors.Is(err, ErrConflict) {
				continue
			}
			if err != nil {
				return fmt.Errorf("store: write sealed state: %w", err)
			}
			e.setStateLocked(st, sealed)
			return nil
		}
		if digest != st.Digest {
			return fmt.Errorf("store: the %d records do not match the store's sealed state (generation %d): records were changed, "+
				"removed or copied in from another copy of the store: %w", n, st.Generation, ErrCorrupt)
		}
		e.setStateLocked(st, raw)
		return nil
	}
	return errors.New("store: the sealed state keeps changing while it is checked")
}

func (e *EncryptedBackend) readState(ctx context.Context) ([]byte, sealedState, error) {
	raw, err := e.inner.Get(ctx, stateRecord)
	if errors.Is(err, ErrNotFound) {
		return nil, sealedState{}, nil
	}
	if err != nil {
		return nil, sealedState{}, fmt.Errorf("store: read sealed state: %w", err)
	}
	pt, err := e.open(stateRecord, raw)
	if err != nil {
		return nil, sealedState{}, err
	}
	st, err := unmarshalState(pt)
	return raw, st, err
}

// checkAnchor compares the generation with the anchor's and raises the anchor.
func (e *EncryptedBackend) checkAnchor(ctx context.Context) error {
	if e.opts.Anchor == nil {
		return nil
	}
	anchored, err := e.opts.Anchor.Load(ctx)
	if err != nil {
		return fmt.Errorf("store: rollback anchor %s (choose its place with --store-anchor): %w", e.opts.Anchor, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if anchored == 0 && e.state.Generation > 0 && !e.opts.AllowRollback {
		// Replicas share the anchor and raise it after they commit: one that made the store's
		// first writes may not have raised it yet. Give it a moment.
		for deadline := time.Now().Add(anchorLag); anchored == 0 && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return fmt.Errorf("store: rollback anchor %s: %w", e.opts.Anchor, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			if anchored, err = e.opts.Anchor.Load(ctx); err != nil {
				return fmt.Errorf("store: rollback anchor %s (choose its place with --store-anchor): %w", e.opts.Anchor, err)
			}
		}
	}
	if e.state.Generation < anchored {
		// Other replicas may have written, and raised the shared anchor, since the state was
		// read. A writer raises the anchor only after it committed, and the anchor was read
		// before the state is read again here: a store that is not an older copy is at least
		// at the anchor's generation now.
		if _, err := e.reloadStateLocked(ctx); err != nil {
			return err
		}
	}
	if anchored == 0 && e.state.Generation > 0 && !e.opts.AllowRollback {
		// Every write raises the anchor, so a store that was written to has a generation
		// recorded: an empty anchor was lost or reset, and a rollback would go unnoticed.
		return fmt.Errorf("%w: the store is at generation %d, but %s records none: the anchor was lost or reset (or was just "+
			"configured for an existing store); if you know the store is current, start once with --allow-store-rollback to record "+
			"its generation", ErrRollback, e.state.Generation, e.opts.Anchor)
	}
	if e.state.Generation < anchored {
		if !e.opts.AllowRollback {
			return fmt.Errorf("%w: the store is at generation %d, but %s recorded generation %d: this is an older copy of the store "+
				"(a restored backup or volume snapshot), and using it would silently undo what was written since, such as revocations "+
				"and access-policy changes; if you restored it on purpose, start once with --allow-store-rollback",
				ErrRollback, e.state.Generation, e.opts.Anchor, anchored)
		}
		e.log.WarnContext(ctx, "store: opening an older copy of the store, as --allow-store-rollback says",
			"generation", e.state.Generation, "anchored_generation", anchored, "anchor", e.opts.Anchor.String())
		if err := e.commitLocked(ctx, nil, nil, anchored+1); err != nil {
			return err
		}
	}
	if err := e.opts.Anchor.Raise(ctx, e.state.Generation); err != nil {
		return fmt.Errorf("store: rollback anchor %s (choose its place with --store-anchor): %w", e.opts.Anchor, err)
	}
	return nil
}

// Stamp returns a value that changes with every write to the store: this backend's and, on a
// shared engine such as etcd, every other replica's. Every write replaces the sealed state
// record, sealed under a fresh nonce, in the same atomic batch as its records, so while Stamp
// returns the same value no record has changed. A reader that takes a stamp before it reads
// records may keep what it read, and use it again, for as long as Stamp still returns that
// stamp. Stamp reads the engine (on etcd a linearizable read), never this backend's memory: a
// write that another replica committed before Stamp is called changes its result. The state
// record is compared, not opened: a stamp says whether anything changed, not what.
func (e *EncryptedBackend) Stamp(ctx context.Context) (string, error) {
	// The floor is what this backend had written or seen before the read starts: a state read
	// afterwards (etcd's reads are linearizable) cannot be older unless it was put back. Taken
	// after the read, a write or a Stamp that completed meanwhile would raise it past a read
	// that was current when it was made.
	own := e.gen.Load()
	e.stampedMu.Lock()
	floor := max(own, e.stampedGen)
	e.stampedMu.Unlock()
	raw, err := e.inner.Get(ctx, stateRecord)
	if err != nil {
		return "", fmt.Errorf("store: read sealed state: %w", err)
	}
	stamp := string(raw)
	e.stampedMu.Lock()
	same := stamp == e.stamped && e.stampedGen >= floor
	e.stampedMu.Unlock()
	if same {
		return stamp, nil
	}
	// A new stamp is opened once: an old one put back (with or without its records) would
	// otherwise make readers keep what they read under it.
	pt, err := e.open(stateRecord, raw)
	if err != nil {
		return "", err
	}
	st, err := unmarshalState(pt)
	if err != nil {
		return "", err
	}
	if st.Generation < floor {
		return "", fmt.Errorf("%w: the sealed state is at generation %d, but this replica has seen generation %d",
			ErrRollback, st.Generation, floor)
	}
	e.stampedMu.Lock()
	defer e.stampedMu.Unlock()
	if st.Generation >= e.stampedGen {
		e.stamped, e.stampedGen = stamp, st.Generation
	}
	return stamp, nil
}

// setStateLocked records the sealed state as read or written. e.mu must be held.
func (e *EncryptedBackend) setStateLocked(st sealedState, raw []byte) {
	e.state, e.stateRaw = st, raw
	e.gen.Store(st.Generation)
}

// Generation returns the store's generation: the number of writes since it was created (or
// since it got its sealed state).
func (e *EncryptedBackend) Generation() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.Generation
}

func (e *EncryptedBackend) fold(d *[sha256.Size]byte, key string, sealed []byte) {
	m := hmac.New(sha256.New, e.macKey)
	var n [binary.MaxVarintLen64]byte
	m.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	m.Write([]byte(key))
	m.Write(sealed)
	for i, b := range m.Sum(nil) {
		d[i] ^= b
	}
}

func aad(key string) []byte {
	b := make([]byte, 0, len(aadPrefix)+1+len(key))
	b = append(b, aadPrefix...)
	b = append(b, KeyVersion)
	return append(b, key...)
}

func (e *EncryptedBackend) seal(key string, plaintext []byte) []byte {
	out := make([]byte, 1, 1+e.aead.NonceSize()+len(plaintext)+e.aead.Overhead())
	out[0] = KeyVersion
	// NewGCMWithRandomNonce draws a fresh random nonce per Seal and wants a nil nonce here.
	return e.aead.Seal(out, nil, plaintext, aad(key)) //nolint:gosec // G407: the nonce is random, see above
}

func (e *EncryptedBackend) open(key string, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+e.aead.NonceSize()+e.aead.Overhead() {
		return nil, fmt.Errorf("store: record %q: %d bytes is too short to be sealed: %w", key, len(sealed), ErrCorrupt)
	}
	if sealed[0] != KeyVersion {
		return nil, fmt.Errorf("store: record %q: sealed with key version %d, this build knows %d: %w",
			key, sealed[0], KeyVersion, ErrCorrupt)
	}
	pt, err := e.aead.Open(nil, nil, sealed[1:], aad(key))
	if err != nil {
		return nil, fmt.Errorf("store: record %q: changed, truncated or moved from another key: %w", key, ErrCorrupt)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

func userKey(key string) error {
	if strings.HasPrefix(key, reservedPrefix) {
		return fmt.Errorf("store: key %q uses the reserved prefix", key)
	}
	return nil
}

// Get implements Backend.
func (e *EncryptedBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := userKey(key); err != nil {
		return nil, err
	}
	raw, err := e.inner.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return e.open(key, raw)
}

// Put implements Backend.
func (e *EncryptedBackend) Put(ctx context.Context, key string, val []byte) error {
	return e.write(ctx, key, nil, false, val)
}

// CompareAndSwap implements Backend. Sealed values carry random nonces, so it opens the current
// record and compares plaintexts, then writes on the condition that the exact sealed bytes it
// read are still there: a concurrent writer in between makes it fail with ErrConflict.
func (e *EncryptedBackend) CompareAndSwap(ctx context.Context, key string, old, newVal []byte) error {
	return e.write(ctx, key, old, true, newVal)
}

// Delete implements Backend.
func (e *EncryptedBackend) Delete(ctx context.Context, key string) error {
	return e.write(ctx, key, nil, false, nil)
}

// write sets key to val (deletes it when val is nil), when compare is set only if its plaintext
// equals old (nil: absent), together with the next sealed state, in one batch.
func (e *EncryptedBackend) write(ctx context.Context, key string, old []byte, compare bool, val []byte) error {
	var conds []Cond
	if compare {
		conds = []Cond{{Key: key, Value: old}}
	}
	return e.Apply(ctx, conds, []Write{{Key: key, Value: val}})
}

// Apply implements Backend: conditions compare plaintexts; the writes are sealed and applied
// together with the next sealed state, on the condition that the exact sealed bytes read for
// every key involved are still there.
func (e *EncryptedBackend) Apply(ctx context.Context, conds []Cond, writes []Write) error {
	keys := make([]string, 0, len(conds)+len(writes))
	for _, c := range conds {
		keys = append(keys, c.Key)
	}
	sealed := make([]Write, len(writes))
	for i, w := range writes {
		if slices.ContainsFunc(writes[:i], func(o Write) bool { return o.Key == w.Key }) {
			return fmt.Errorf("store: key %q is written twice in one batch", w.Key)
		}
		keys = append(keys, w.Key)
		sealed[i] = Write{Key: w.Key}
		if w.Value != nil {
			sealed[i].Value = e.seal(w.Key, w.Value)
		}
	}
	for _, k := range keys {
		if err := userKey(k); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for range maxRetries {
		current := make([]Cond, 0, len(keys))
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				continue
			}
			seen[k] = true
			raw, err := e.inner.Get(ctx, k)
			switch {
			case errors.Is(err, ErrNotFound):
				raw = nil
			case err != nil:
				return err
			}
			current = append(current, Cond{Key: k, Value: raw})
		}
		for _, c := range conds {
			if err := e.compare(c.Key, rawOf(current, c.Key), c.Value); err != nil {
				return err
			}
		}
		err := e.commitLocked(ctx, current, sealed, e.state.Generation+1)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		// A record or the sealed state moved: read them again; a changed record fails the
		// comparison above on the next round.
		if _, err := e.reloadStateLocked(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: %v: the store kept changing under this write", ErrConflict, keys)
}

func rawOf(current []Cond, key string) []byte {
	for _, c := range current {
		if c.Key == key {
			return c.Value
		}
	}
	return nil
}

// compare checks the current sealed record raw against the expected plaintext old.
func (e *EncryptedBackend) compare(key string, raw, old []byte) error {
	switch {
	case old == nil && raw != nil:
		return fmt.Errorf("%w: %q already exists", ErrConflict, key)
	case old != nil && raw == nil:
		return fmt.Errorf("%w: %q does not exist", ErrConflict, key)
	case old == nil:
		return nil
	}
	cur, err := e.open(key, raw)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, old) {
		return fmt.Errorf("%w: %q holds another value", ErrConflict, key)
	}
	return nil
}

// commitLocked applies writes on conds and on the current sealed state, with the next state at
// generation gen, then raises the anchor. conds must give the current sealed bytes of every
// written key (at most one write per key).
func (e *EncryptedBackend) commitLocked(ctx context.Context, conds []Cond, writes []Write, gen uint64) error {
	next := sealedState{Generation: gen, Digest: e.state.Digest}
	for _, w := range writes {
		// conds holds the current sealed bytes of every written key (nil: absent): out of the
		// digest they go, the new bytes in.
		if old := rawOf(conds, w.Key); old != nil {
			e.fold(&next.Digest, w.Key, old)
		}
		if w.Value != nil {
			e.fold(&next.Digest, w.Key, w.Value)
		}
	}
	sealed := e.seal(stateRecord, next.marshal())
	conds = append(conds, Cond{Key: stateRecord, Value: e.stateRaw})
	writes = append(writes, Write{Key: stateRecord, Value: sealed})
	if err := e.inner.Apply(ctx, conds, writes); err != nil {
		return err
	}
	e.setStateLocked(next, sealed)
	if e.opts.Anchor != nil {
		// The write is durable; an anchor that lags only narrows what a rollback check sees
		// until the next write raises it.
		if err := e.opts.Anchor.Raise(context.WithoutCancel(ctx), gen); err != nil {
			e.log.ErrorContext(ctx, "store: the rollback anchor could not be raised; retried at the next write",
				"anchor", e.opts.Anchor.String(), "generation", gen, "error", err.Error())
		}
	}
	return nil
}

// reloadStateLocked reads the sealed state again (another writer moved it).
func (e *EncryptedBackend) reloadStateLocked(ctx context.Context) (bool, error) {
	raw, st, err := e.readState(ctx)
	if err != nil {
		return false, err
	}
	if raw == nil {
		return false, fmt.Errorf("store: the sealed state disappeared: %w", ErrCorrupt)
	}
	if st.Generation < e.state.Generation {
		return false, fmt.Errorf("%w: the sealed state went back from generation %d to %d while the store was open",
			ErrRollback, e.state.Generation, st.Generation)
	}
	changed := !bytes.Equal(raw, e.stateRaw)
	e.setStateLocked(st, raw)
	return changed, nil
}

// List implements Backend. Any record that fails to open fails the whole List.
func (e *EncryptedBackend) List(ctx context.Context, prefix string) ([]KV, error) {
	raw, err := e.inner.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]KV, 0, len(raw))
	for _, kv := range raw {
		if strings.HasPrefix(kv.Key, reservedPrefix) {
			continue
		}
		pt, err := e.open(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, KV{Key: kv.Key, Value: pt})
	}
	return out, nil
}

// Close implements Backend; it closes the underlying engine.
func (e *EncryptedBackend) Close() error { return e.inner.Close() }
