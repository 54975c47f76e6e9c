package attestation

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// DefaultGrantTTL is how long a sidecar grant stays valid: long enough for the sidecar beside
// the app to start, short enough that a leaked grant soon means nothing.
const DefaultGrantTTL = 5 * time.Minute

// A sidecar grant ties a sidecar's identity to its app's attestation: the control plane gives
// one to every attested app (ROLE_APP), the app's launcher hands it to the sidecar in the same
// pod or network namespace, and the sidecar presents it for its first SVID. It is
//
//	"amg1" || expires (unix seconds, 8 bytes) || id (16 random bytes) || config ID ||
//	HMAC-SHA-256(key, "attestmesh sidecar grant v1" || everything before)
//
// single-use (a bounded replay cache remembers redeemed ids until they expire) and valid for
// one config ID only.
const (
	grantMagic    = "amg1"
	grantMACLabel = "attestmesh sidecar grant v1"
	grantHeader   = len(grantMagic) + 8 + nonceIDSize
	maxGrantSize  = grantHeader + attestapi.MaxConfigIDSize + sha256.Size
)

// Grants issues and redeems sidecar grants. Safe for concurrent use.
type Grants struct {
	key  []byte
	ttl  time.Duration
	now  func() time.Time
	rand io.Reader
	used *replayCache
}

// NewGrants returns a grant issuer whose grants, MAC'd under key, expire after ttl.
func NewGrants(key []byte, ttl time.Duration, capacity int, now func() time.Time) *Grants {
	if now == nil {
		now = time.Now
	}
	return &Grants{key: key, ttl: ttl, now: now, rand: rand.Reader, used: newReplayCache(capacity)}
}

func (g *Grants) mac(body []byte) []byte {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(grantMACLabel))
	m.Write(body)
	return m.Sum(nil)
}

// Issue returns a grant for the sidecar of configID.
func (g *Grants) Issue(configID string) ([]byte, error) {
	b := make([]byte, grantHeader, grantHeader+len(configID)+sha256.Size)
	copy(b, grantMagic)
	binary.BigEndian.PutUint64(b[len(grantMagic):], uint64(g.now().Add(g.ttl).Unix())) //nolint:gosec // a time after 1970
	if _, err := io.ReadFull(g.rand, b[len(grantMagic)+8:grantHeader]); err != nil {
		return nil, fmt.Errorf("attestation: grant: %w", err)
	}
	b = append(b, configID...)
	return append(b, g.mac(b)...), nil
}

// Redeem checks that grant was issued for configID, is unexpired and unused, and marks it used.
func (g *Grants) Redeem(configID string, grant []byte) error {
	if len(grant) < grantHeader+sha256.Size || len(grant) > maxGrantSize || !bytes.HasPrefix(grant, []byte(grantMagic)) {
		return fmt.Errorf("%w: the sidecar grant is malformed (%d bytes)", refuse(attestapi.ReasonSidecarGrant), len(grant))
	}
	body, sum := grant[:len(grant)-sha256.Size], grant[len(grant)-sha256.Size:]
	if subtle.ConstantTimeCompare(sum, g.mac(body)) != 1 {
		return fmt.Errorf("%w: the sidecar grant was not issued by this control plane", refuse(attestapi.ReasonSidecarGrant))
	}
	if got := string(body[grantHeader:]); got != configID {
		return fmt.Errorf("%w: the sidecar grant is for config ID %q, not %q", refuse(attestapi.ReasonSidecarGrant), got, configID)
	}
	now := g.now()
	expires := time.Unix(int64(binary.BigEndian.Uint64(body[len(grantMagic):])), 0) //nolint:gosec // written by Issue
	if !now.Before(expires) {
		return fmt.Errorf("%w: the sidecar grant expired at %s: restart the app so that its launcher hands over a new one",
			refuse(attestapi.ReasonSidecarGrant), expires.UTC().Format(time.RFC3339))
	}
	var id [nonceIDSize]byte
	copy(id[:], body[len(grantMagic)+8:grantHeader])
	switch g.used.add(id, expires, now) {
	case replayUsed:
		return fmt.Errorf("%w: the sidecar grant was used already (each grant gives one sidecar its first SVID)", refuse(attestapi.ReasonSidecarGrant))
	case replayFull:
		return fmt.Errorf("%w: too many grants in use; try again shortly", errNonceCapacity)
	}
	return nil
}
