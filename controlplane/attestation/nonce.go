package attestation

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"sync"
	"time"
)

// NonceSize is the size of a control-plane nonce: the last 32 bytes of REPORTDATA.
const NonceSize = 32

// maxOutstandingNonces bounds the memory an unauthenticated caller can make the control plane
// hold: GetNonce refuses once this many nonces are outstanding and unexpired.
const maxOutstandingNonces = 1 << 16

type nonceEntry struct {
	configID string
	expires  time.Time
	used     bool
}

// Nonces issues single-use, expiring nonces bound to a config ID. Consumed nonces are kept as
// tombstones until they expire, so that a replay is reported as a replay. Safe for concurrent use.
type Nonces struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[[NonceSize]byte]*nonceEntry
}

// NewNonces returns a nonce issuer whose nonces expire after ttl.
func NewNonces(ttl time.Duration, now func() time.Time) *Nonces {
	if now == nil {
		now = time.Now
	}
	return &Nonces{ttl: ttl, now: now, entries: make(map[[NonceSize]byte]*nonceEntry)}
}

// Issue returns a fresh nonce for configID and its expiry.
func (n *Nonces) Issue(configID string) ([NonceSize]byte, time.Time, error) {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nonce, time.Time{}, fmt.Errorf("attestation: nonce: %w", err)
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.entries) >= maxOutstandingNonces {
		n.purgeLocked(now)
		if len(n.entries) >= maxOutstandingNonces {
			return nonce, time.Time{}, fmt.Errorf("%w: too many outstanding nonces (%d)", errNonceCapacity, len(n.entries))
		}
	}
	exp := now.Add(n.ttl)
	n.entries[nonce] = &nonceEntry{configID: configID, expires: exp}
	return nonce, exp, nil
}

// Consume checks that nonce was issued for configID, is unexpired and unused, and marks it used.
func (n *Nonces) Consume(configID string, nonce []byte) error {
	if len(nonce) != NonceSize {
		return fmt.Errorf("%w: nonce is %d bytes, want %d", errNonceInvalid, len(nonce), NonceSize)
	}
	var k [NonceSize]byte
	copy(k[:], nonce)
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.entries[k]
	switch {
	case !ok:
		return fmt.Errorf("%w: nonce was not issued by this control plane (or expired long ago)", errNonceInvalid)
	case e.used:
		return fmt.Errorf("%w: nonce already used (replayed evidence)", errNonceReplayed)
	case !now.Before(e.expires):
		delete(n.entries, k)
		return fmt.Errorf("%w: nonce expired at %s", errNonceExpired, e.expires.UTC().Format(time.RFC3339))
	case subtle.ConstantTimeCompare([]byte(e.configID), []byte(configID)) != 1:
		return fmt.Errorf("%w: nonce was issued for config ID %q, not %q", errNonceInvalid, e.configID, configID)
	}
	e.used = true
	return nil
}

func (n *Nonces) purgeLocked(now time.Time) {
	for k, e := range n.entries {
		if !now.Before(e.expires) {
			delete(n.entries, k)
		}
	}
}
