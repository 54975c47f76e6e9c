package attestation

import (
	"bytes"
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
//	"amg2" || expires (unix seconds, 8 bytes) || id (16 random bytes) || app (68 bytes) ||
//	config ID || HMAC-SHA-256(key, "attestmesh sidecar grant v2" || everything before)
//
// single-use (a bounded replay cache remembers redeemed ids until they expire), valid for one
// config ID only, and it names the app that was attested (see app): the sidecar's SVIDs record
// it, and each renewal checks it against the session again.
const (
	grantMagic    = "amg2"
	grantMACLabel = "attestmesh sidecar grant v2"
	grantIDEnd    = len(grantMagic) + 8 + nonceIDSize
	grantHeader   = grantIDEnd + appSize
	maxGrantSize  = grantHeader + attestapi.MaxConfigIDSize + sha256.Size
)

// Grants issues and redeems sidecar grants. Safe for concurrent use.
type Grants struct {
	ttl  time.Duration
	now  func() time.Time
	rand io.Reader
	used *replayCache
	macs *macs
}

// NewGrants returns a grant issuer whose grants, MAC'd under key, expire after ttl.
func NewGrants(key []byte, ttl time.Duration, capacity int, now func() time.Time) *Grants {
	if now == nil {
		now = time.Now
	}
	return &Grants{ttl: ttl, now: now, rand: rand.Reader, used: newReplayCache(capacity), macs: newMACs(key)}
}

func (g *Grants) mac(body []byte) []byte {
	m := g.macs.get()
	defer g.macs.put(m)
	m.Write([]byte(grantMACLabel))
	m.Write(body)
	return m.Sum(make([]byte, 0, sha256.Size))
}

// Issue returns a grant for the sidecar of configID, speaking for the attested app a.
func (g *Grants) Issue(configID string, a app) ([]byte, error) {
	b := make([]byte, grantIDEnd, grantHeader+len(configID)+sha256.Size)
	copy(b, grantMagic)
	binary.BigEndian.PutUint64(b[len(grantMagic):], uint64(g.now().Add(g.ttl).Unix())) //nolint:gosec // a time after 1970
	if _, err := io.ReadFull(g.rand, b[len(grantMagic)+8:grantIDEnd]); err != nil {
		return nil, fmt.Errorf("attestation: grant: %w", err)
	}
	b = append(b, a.marshal()...)
	b = append(b, configID...)
	return append(b, g.mac(b)...), nil
}

// check checks that grant was issued for configID, is unexpired and unused, and returns the
// app it speaks for and its id, which Redeem marks used. It remembers nothing.
func (g *Grants) check(configID string, grant []byte) (app, [nonceIDSize]byte, time.Time, error) {
	var id [nonceIDSize]byte
	if len(grant) < grantHeader+sha256.Size || len(grant) > maxGrantSize || !bytes.HasPrefix(grant, []byte(grantMagic)) {
		return app{}, id, time.Time{}, fmt.Errorf("%w: the sidecar grant is malformed (%d bytes)", refuse(attestapi.ReasonSidecarGrant), len(grant))
	}
	body, sum := grant[:len(grant)-sha256.Size], grant[len(grant)-sha256.Size:]
	if subtle.ConstantTimeCompare(sum, g.mac(body)) != 1 {
		return app{}, id, time.Time{}, fmt.Errorf("%w: the sidecar grant was not issued by this control plane", refuse(attestapi.ReasonSidecarGrant))
	}
	if got := string(body[grantHeader:]); got != configID {
		return app{}, id, time.Time{}, fmt.Errorf("%w: the sidecar grant is for config ID %q, not %q", refuse(attestapi.ReasonSidecarGrant), got, configID)
	}
	now := g.now()
	expires := time.Unix(int64(binary.BigEndian.Uint64(body[len(grantMagic):])), 0) //nolint:gosec // written by Issue
	if !now.Before(expires) {
		return app{}, id, time.Time{}, fmt.Errorf("%w: the sidecar grant expired at %s: restart the app so that its launcher hands over a new one",
			refuse(attestapi.ReasonSidecarGrant), expires.UTC().Format(time.RFC3339))
	}
	copy(id[:], body[len(grantMagic)+8:grantIDEnd])
	if g.used.contains(id, now) {
		return app{}, id, time.Time{}, errGrantUsed
	}
	a, _ := unmarshalApp(body[grantIDEnd:grantHeader])
	return a, id, expires, nil
}

var errGrantUsed = fmt.Errorf("%w: the sidecar grant was used already (each grant gives one sidecar its first SVID)", refuse(attestapi.ReasonSidecarGrant))

// Redeem checks grant (see check), marks it used and returns the app it speaks for.
func (g *Grants) Redeem(configID string, grant []byte) (app, error) {
	a, id, expires, err := g.check(configID, grant)
	if err != nil {
		return app{}, err
	}
	switch g.used.add(id, expires, g.now()) {
	case replayUsed:
		return app{}, errGrantUsed
	case replayFull:
		return app{}, fmt.Errorf("%w: too many grants in use; try again shortly", errNonceCapacity)
	}
	return a, nil
}
