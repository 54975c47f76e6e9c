package dcap

import (
	"bytes"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/attest/capped"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What was verified once is remembered, but only the signatures: a later call still refuses
// expired certificates and stale collateral, and any changed byte.
func TestVerifyCacheKeepsOnlySignatures(t *testing.T) {
	v := loadVectors(t)
	opts := Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true}
	first, err := Verify(v.quote, v.collateral(), opts)
	require.NoError(t, err)
	again, err := Verify(v.quote, v.collateral(), opts)
	require.NoError(t, err)
	assert.Equal(t, first, again)

	late := opts
	late.Now = time.Unix(validAt, 0).Add(20 * 365 * day)
	_, err = Verify(v.quote, v.collateral(), late)
	require.Error(t, err)
	assert.Equal(t, ReasonCertExpired, ReasonOf(err), "error: %v", err)

	stale := opts
	stale.CollateralMaxAge = time.Second
	_, err = Verify(v.quote, v.collateral(), stale)
	require.Error(t, err)
	assert.Equal(t, ReasonCollateralExpired, ReasonOf(err), "error: %v", err)

	c := v.collateral()
	c.TCBInfo = bytes.Replace(bytes.Clone(c.TCBInfo), []byte(`"tcbEvaluationDataNumber":`), []byte(`"tcbEvaluationDataNumber": `), 1)
	_, err = Verify(v.quote, c, opts)
	require.Error(t, err, "a changed TCB Info body is verified afresh")
	assert.Equal(t, ReasonCollateralSignature, ReasonOf(err), "error: %v", err)
}

// A PCK chain that came with a quote is remembered only once it verified: chains that do not
// chain to the root (junk sent by anyone) fill no cache.
func TestUnverifiedChainsAreNotCached(t *testing.T) {
	v := loadVectors(t)
	saved := parsed
	parsed = capped.New[[32]byte, any](maxVerified)
	t.Cleanup(func() { parsed = saved })
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	chainKey := cacheKey("pem-chain", q.Signature.Certification.Data)

	otherRoot, _ := newTestCA(t)
	_, err = Verify(v.quote, v.collateral(), Options{Root: otherRoot, Now: time.Unix(validAt, 0), SkipRevocation: true})
	require.Error(t, err)
	assert.Equal(t, ReasonPCKChain, ReasonOf(err), "error: %v", err)
	_, cached := parsed.Get(chainKey)
	assert.False(t, cached, "a chain that did not verify is not kept")

	_, err = Verify(v.quote, v.collateral(), Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true})
	require.NoError(t, err)
	_, cached = parsed.Get(chainKey)
	assert.True(t, cached, "a verified chain is kept")
}
