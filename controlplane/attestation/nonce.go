package attestation

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// DefaultReplayCapacity bounds the nonces (and, separately, the sidecar grants) remembered as
// used until they expire: 2^18 entries, about 20 MB at most.
const DefaultReplayCapacity = 1 << 18

// A nonce is stateless: issued-at time in milliseconds (6 bytes) || 10 random bytes || the first
// 16 bytes of HMAC-SHA-256(key, "attestmesh nonce v1" || issued-at || random || config ID).
// Issuing stores nothing, so no flood of GetNonce calls can exhaust anything; only a nonce
// consumed by Attest is remembered, in a bounded replay cache, until it expires.
const (
	nonceTimeSize = 6
	nonceIDSize   = nonceTimeSize + 10
	nonceMACLabel = "attestmesh nonce v1"
)

// Nonces issues and checks single-use, expiring nonces bound to a config ID. Safe for
// concurrent use; several control planes that share the MAC key accept each other's nonces
// (each keeps its own replay cache).
type Nonces struct {
	key  []byte
	ttl  time.Duration
	now  func() time.Time
	rand io.Reader
	used *replayCache
}

// NewNonces returns a nonce issuer whose nonces, MAC'd under key, expire after ttl; at most
// capacity consumed nonces are remembered at once (DefaultReplayCapacity when zero).
func NewNonces(key []byte, ttl time.Duration, capacity int, now func() time.Time) *Nonces {
	if now == nil {
		now = time.Now
	}
	return &Nonces{key: key, ttl: ttl, now: now, rand: rand.Reader, used: newReplayCache(capacity)}
}

func (n *Nonces) mac(id []byte, configID string) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write([]byte(nonceMACLabel))
	m.Write(id)
	m.Write([]byte(configID))
	return m.Sum(nil)[:attestapi.NonceSize-nonceIDSize]
}

// Issue returns a fresh nonce for configID and its expiry.
func (n *Nonces) Issue(configID string) ([attestapi.NonceSize]byte, time.Time, error) {
	var nonce [attestapi.NonceSize]byte
	now := n.now()
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli())) //nolint:gosec // a time after 1970
	copy(nonce[:nonceTimeSize], ms[8-nonceTimeSize:])
	if _, err := io.ReadFull(n.rand, nonce[nonceTimeSize:nonceIDSize]); err != nil {
		return nonce, time.Time{}, fmt.Errorf("attestation: nonce: %w", err)
	}
	copy(nonce[nonceIDSize:], n.mac(nonce[:nonceIDSize], configID))
	return nonce, issuedAt(nonce[:]).Add(n.ttl), nil
}

func issuedAt(nonce []byte) time.Time {
	var ms [8]byte
	copy(ms[8-nonceTimeSize:], nonce[:nonceTimeSize])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:]))) //nolint:gosec // 48 bits
}

// Consume checks that nonce was issued for configID by a holder of the key, is unexpired and
// unused, and marks it used.
func (n *Nonces) Consume(configID string, nonce []byte) error {
	if len(nonce) != attestapi.NonceSize {
		return fmt.Errorf("%w: nonce is %d bytes, want %d", errNonceInvalid, len(nonce), attestapi.NonceSize)
	}
	if subtle.ConstantTimeCompare(nonce[nonceIDSize:], n.mac(nonce[:nonceIDSize], configID)) != 1 {
		return fmt.Errorf("%w: nonce was not issued by this control plane for config ID %q", errNonceInvalid, configID)
	}
	now := n.now()
	issued := issuedAt(nonce)
	expires := issued.Add(n.ttl)
	switch {
	case issued.After(now.Add(time.Minute)):
		return fmt.Errorf("%w: nonce was issued in the future (%s)", errNonceInvalid, issued.UTC().Format(time.RFC3339))
	case !now.Before(expires):
		return fmt.Errorf("%w: nonce expired at %s", errNonceExpired, expires.UTC().Format(time.RFC3339))
	}
	var id [nonceIDSize]byte
	copy(id[:], nonce)
	switch n.used.add(id, expires, now) {
	case replayUsed:
		return fmt.Errorf("%w: nonce already used (replayed evidence)", errNonceReplayed)
	case replayFull:
		return fmt.Errorf("%w: %d nonces are in use; try again shortly", errNonceCapacity, n.used.capacity)
	}
	return nil
}

// replayCache remembers used single-use tokens until they expire, bounded: when full of unexpired
// entries it refuses new ones rather than forget one (forgetting would allow a replay).
type replayCache struct {
	capacity int

	mu      sync.Mutex
	entries map[[nonceIDSize]byte]time.Time
	sweep   time.Time
}

type replayResult int

const (
	replayFresh replayResult = iota
	replayUsed
	replayFull
)

func newReplayCache(capacity int) *replayCache {
	if capacity <= 0 {
		capacity = DefaultReplayCapacity
	}
	return &replayCache{capacity: capacity, entries: map[[nonceIDSize]byte]time.Time{}}
}

func (c *replayCache) add(id [nonceIDSize]byte, expires, now time.Time) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.entries[id]; ok && now.Before(exp) {
		return replayUsed
	}
	if len(c.entries) >= c.capacity || now.Sub(c.sweep) > time.Minute {
		for k, exp := range c.entries {
			if !now.Before(exp) {
				delete(c.entries, k)
			}
		}
		c.sweep = now
		if len(c.entries) >= c.capacity {
			return replayFull
		}
	}
	c.entries[id] = expires
	return replayFresh
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
