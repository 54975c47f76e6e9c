package attestation

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The grants' pooled HMACs, used from many goroutines at once alongside a nonce issuer's
// under another key, compute HMAC-SHA-256(grant key, label || body) each time: no hash is
// shared between two calls, none is left unreset, and the two pools never mix keys.
func TestGrantMACsPooledAndSeparate(t *testing.T) {
	master := []byte("a MAC key of at least 32 bytes..")
	nonceKey, grantKey := subKey(master, "nonce"), subKey(master, "grant")
	n := NewNonces(nonceKey, time.Minute, 0, nil)
	g := NewGrants(grantKey, time.Minute, 1<<16, nil)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() { errs[w] = grantRounds(n, g, grantKey, w) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
}

func grantRounds(n *Nonces, g *Grants, grantKey []byte, w int) error {
	for i := range 200 {
		id := fmt.Sprintf("s/svc-%d-%d", w, i%3)
		if _, _, err := n.Issue(id); err != nil { // the nonce pool, busy at the same time
			return err
		}
		grant, err := g.Issue(id, app{ISVSVN: uint16(i)}) //nolint:gosec // i < 200
		if err != nil {
			return err
		}
		body := grant[:len(grant)-sha256.Size]
		m := hmac.New(sha256.New, grantKey)
		m.Write([]byte(grantMACLabel))
		m.Write(body)
		if !bytes.Equal(m.Sum(nil), grant[len(grant)-sha256.Size:]) {
			return fmt.Errorf("grant %d of worker %d: MAC is not HMAC-SHA-256 under the grant key", i, w)
		}
		a, err := g.Redeem(id, grant)
		if err != nil {
			return err
		}
		if a.ISVSVN != uint16(i) { //nolint:gosec // i < 200
			return fmt.Errorf("grant %d of worker %d: redeemed for ISVSVN %d", i, w, a.ISVSVN)
		}
		forged := bytes.Clone(grant)
		forged[len(forged)-1] ^= 1
		if _, err := g.Redeem(id, forged); err == nil {
			return fmt.Errorf("grant %d of worker %d: a forged MAC was accepted", i, w)
		}
	}
	return nil
}
