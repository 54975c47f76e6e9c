package attestation

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// DefaultReplayCapacity bounds the nonces (and, separately, the sidecar grants) remembered as
// used until they expire: 2^18 entries, about 20 MB at most.
const DefaultReplayCapacity = 1 << 18

// A nonce is stateless: issued-at time in milliseconds (6 bytes) || the issuing replica's tag
// (4 bytes) || 6 random bytes || the first 16 bytes of HMAC-SHA-256(key, "attestmesh nonce v1"
// || everything before || config ID). Issuing stores nothing, so no flood of GetNonce calls can
// exhaust anything; only a nonce consumed by Attest is remembered, in a bounded replay cache,
// until it expires.
//
// A nonce is good only at the replica that issued it. Each replica's replay cache is its own,
// so evidence consumed at one replica must not be accepted by another (it would hand the app's
// secrets to whoever replays it); binding the nonce to its replica keeps one attestation on
// one replica without any state shared between them. GetNonce and Attest travel on one gRPC
// connection, hence to one replica; a client whose connection moved in between asks again.
const (
	nonceTimeSize    = 6
	nonceReplicaSize = 4
	nonceIDSize      = nonceTimeSize + nonceReplicaSize + 6
	nonceMACLabel    = "attestmesh nonce v1"
)

// Nonces issues and checks single-use, expiring nonces bound to a config ID and to this
// replica. Safe for concurrent use.
type Nonces struct {
	ttl     time.Duration
	now     func() time.Time
	rand    io.Reader
	replica [nonceReplicaSize]byte
	used    *replayCache
	macs    *macs
}

// macs are HMAC-SHA-256s under one key, kept for reuse: hmac.New hashes the key's pads and
// allocates, and the nonces and grants take four MACs per attestation; Reset keeps the keyed
// state. Safe for concurrent use.
type macs struct{ pool sync.Pool }

func newMACs(key []byte) *macs {
	m := &macs{}
	m.pool.New = func() any { return hmac.New(sha256.New, key) }
	return m
}

// get returns a reset HMAC; put it back when done.
func (m *macs) get() hash.Hash {
	h := m.pool.Get().(hash.Hash)
	h.Reset()
	return h
}

func (m *macs) put(h hash.Hash) { m.pool.Put(h) }

// NewNonces returns a nonce issuer whose nonces, MAC'd under key, expire after ttl; at most
// capacity consumed nonces are remembered at once (DefaultReplayCapacity when zero).
func NewNonces(key []byte, ttl time.Duration, capacity int, now func() time.Time) *Nonces {
	if now == nil {
		now = time.Now
	}
	n := &Nonces{ttl: ttl, now: now, rand: rand.Reader, used: newReplayCache(capacity), macs: newMACs(key)}
	_, _ = rand.Read(n.replica[:]) // crypto/rand does not fail
	return n
}

func (n *Nonces) mac(id []byte, configID string) []byte {
	m := n.macs.get()
	defer n.macs.put(m)
	m.Write([]byte(nonceMACLabel))
	m.Write(id)
	m.Write([]byte(configID))
	return m.Sum(make([]byte, 0, sha256.Size))[:attestapi.NonceSize-nonceIDSize]
}

// Issue returns a fresh nonce for configID and its expiry.
func (n *Nonces) Issue(configID string) ([attestapi.NonceSize]byte, time.Time, error) {
	var nonce [attestapi.NonceSize]byte
	now := n.now()
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli())) //nolint:gosec // a time after 1970
	copy(nonce[:nonceTimeSize], ms[8-nonceTimeSize:])
	copy(nonce[nonceTimeSize:], n.replica[:])
	if _, err := io.ReadFull(n.rand, nonce[nonceTimeSize+nonceReplicaSize:nonceIDSize]); err != nil {
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

// Check checks that nonce was issued for configID by a holder of the key and is unexpired and
// unused. It remembers nothing: Attest checks first and consumes only evidence that verified, so
// that junk cannot fill the replay cache.
func (n *Nonces) Check(configID string, nonce []byte) error {
	_, _, err := n.check(configID, nonce)
	return err
}

func (n *Nonces) check(configID string, nonce []byte) ([nonceIDSize]byte, time.Time, error) {
	var id [nonceIDSize]byte
	if len(nonce) != attestapi.NonceSize {
		return id, time.Time{}, fmt.Errorf("%w: nonce is %d bytes, want %d", errNonceInvalid, len(nonce), attestapi.NonceSize)
	}
	if subtle.ConstantTimeCompare(nonce[nonceIDSize:], n.mac(nonce[:nonceIDSize], configID)) != 1 {
		return id, time.Time{}, fmt.Errorf("%w: nonce was not issued by this control plane for config ID %q", errNonceInvalid, configID)
	}
	if !bytes.Equal(nonce[nonceTimeSize:nonceTimeSize+nonceReplicaSize], n.replica[:]) {
		return id, time.Time{}, fmt.Errorf("%w: %s", errNonceInvalid, attestapi.OtherReplicaNonce)
	}
	now := n.now()
	issued := issuedAt(nonce)
	expires := issued.Add(n.ttl)
	switch {
	case issued.After(now.Add(time.Minute)):
		return id, time.Time{}, fmt.Errorf("%w: nonce was issued in the future (%s)", errNonceInvalid, issued.UTC().Format(time.RFC3339))
	case !now.Before(expires):
		return id, time.Time{}, fmt.Errorf("%w: nonce expired at %s", errNonceExpired, expires.UTC().Format(time.RFC3339))
	}
	copy(id[:], nonce)
	if n.used.contains(id, now) {
		return id, time.Time{}, errReplayed
	}
	return id, expires, nil
}

var errReplayed = fmt.Errorf("%w: nonce already used (replayed evidence)", errNonceReplayed)

// Consume checks nonce (see Check) and marks it used; of two concurrent calls with one nonce,
// one fails.
func (n *Nonces) Consume(configID string, nonce []byte) error {
	id, expires, err := n.check(configID, nonce)
	if err != nil {
		return err
	}
	switch n.used.add(id, expires, n.now()) {
	case replayUsed:
		return errReplayed
	case replayFull:
		return fmt.Errorf("%w: %d nonces are in use; try again shortly", errNonceCapacity, n.used.capacity)
	}
	return nil
}

// replayCache remembers used single-use tokens until they expire, bounded: when full of unexpired
// entries it refuses new ones rather than forget one (forgetting would allow a replay). Entries
// are filed by the second they expire in, so expiring them costs the expired entries only, never
// a scan of the live ones.
type replayCache struct {
	capacity int

	mu      sync.Mutex
	entries map[[nonceIDSize]byte]int64 // id -> the second it expires in
	buckets map[int64][][nonceIDSize]byte
	swept   int64 // every bucket before this second is gone
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
	return &replayCache{capacity: capacity, entries: map[[nonceIDSize]byte]int64{}, buckets: map[int64][][nonceIDSize]byte{}}
}

// expiryBucket is the second an entry expiring at t is filed under: it is gone from then on
// (rounded up, so that no entry is dropped before it expires).
func expiryBucket(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// expireLocked drops the buckets that expired by now. Buckets are few (one per second of a
// token's lifetime); each entry is deleted once.
func (c *replayCache) expireLocked(now time.Time) {
	sec := now.Unix()
	if sec < c.swept {
		return
	}
	for b, ids := range c.buckets {
		if b <= sec {
			for _, id := range ids {
				if c.entries[id] == b {
					delete(c.entries, id)
				}
			}
			delete(c.buckets, b)
		}
	}
	c.swept = sec + 1
}

func (c *replayCache) contains(id [nonceIDSize]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
	_, ok := c.entries[id]
	return ok
}

func (c *replayCache) add(id [nonceIDSize]byte, expires, now time.Time) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
	if _, ok := c.entries[id]; ok {
		return replayUsed
	}
	if len(c.entries) >= c.capacity {
		return replayFull
	}
	b := expiryBucket(expires)
	c.entries[id] = b
	c.buckets[b] = append(c.buckets[b], id)
	return replayFresh
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
