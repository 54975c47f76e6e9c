package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"
)

// KeyVersion is the version byte that starts every sealed record. It names the key that sealed the
// record, so that a later key rotation can tell old records from new ones.
const KeyVersion byte = 1

// reservedPrefix starts the keys that the encrypting layer keeps for itself; callers cannot use
// them and List does not return them.
const reservedPrefix = "\x00attestmesh/"

// checkRecord holds the key check value: a known plaintext sealed under the key.
const checkRecord = reservedPrefix + "store-key-check"

var checkPlaintext = []byte("attestmesh store key check v1")

// aadPrefix domain-separates the additional authenticated data of store records.
const aadPrefix = "attestmesh/store/v1\x00"

// EncryptedBackend seals every value with AES-256-GCM before it reaches the underlying Backend.
// Each write uses a fresh random 96-bit nonce; the record's key name and the key version are bound
// as additional authenticated data, so a value moved to another key name, or changed by a single
// bit, fails to open. Key names stay in plaintext. A sealed record is
//
//	KeyVersion (1 byte) || nonce (12 bytes) || ciphertext || GCM tag (16 bytes)
//
// EncryptedBackend is safe for concurrent use as far as the underlying Backend is.
type EncryptedBackend struct {
	inner Backend
	aead  cipher.AEAD
}

var _ Backend = (*EncryptedBackend)(nil)

// Encrypted wraps b so that every value is sealed under key. It checks the key against the check
// value stored by the first Encrypted on this backend and fails with ErrWrongKey when the store was
// sealed with another key; on an empty backend it stores the check value. It refuses a non-empty
// backend that has no check value (plaintext or foreign data).
func Encrypted(ctx context.Context, b Backend, key Key) (*EncryptedBackend, error) {
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
	e := &EncryptedBackend{inner: b, aead: aead}
	if err := e.checkKey(ctx); err != nil {
		return nil, err
	}
	return e, nil
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
		if len(existing) > 0 {
			return fmt.Errorf("store: the store holds %d records but no key check value: refusing to use it "+
				"(it was not written by attestmesh's encrypted store)", len(existing))
		}
		err = e.inner.CompareAndSwap(ctx, checkRecord, nil, e.seal(checkRecord, checkPlaintext))
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
	if err := userKey(key); err != nil {
		return err
	}
	return e.inner.Put(ctx, key, e.seal(key, val))
}

// CompareAndSwap implements Backend. Sealed values carry random nonces, so it opens the current
// record, compares plaintexts, and then swaps on the exact sealed bytes it read: a concurrent
// writer in between makes the underlying compare fail with ErrConflict.
func (e *EncryptedBackend) CompareAndSwap(ctx context.Context, key string, old, newVal []byte) error {
	if err := userKey(key); err != nil {
		return err
	}
	sealedNew := e.seal(key, newVal)
	if old == nil {
		return e.inner.CompareAndSwap(ctx, key, nil, sealedNew)
	}
	raw, err := e.inner.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %q does not exist", ErrConflict, key)
	}
	if err != nil {
		return err
	}
	cur, err := e.open(key, raw)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, old) {
		return fmt.Errorf("%w: %q holds another value", ErrConflict, key)
	}
	return e.inner.CompareAndSwap(ctx, key, raw, sealedNew)
}

// Delete implements Backend.
func (e *EncryptedBackend) Delete(ctx context.Context, key string) error {
	if err := userKey(key); err != nil {
		return err
	}
	return e.inner.Delete(ctx, key)
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

// Close implements Backend; it closes the underlying backend.
func (e *EncryptedBackend) Close() error { return e.inner.Close() }
