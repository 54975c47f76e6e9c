package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"testing"
	"time"

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
}

// Once the quote and its collateral verified (and are cached), the same input with one byte
// changed is checked again, and refused.
func TestVerifyCacheChangedByte(t *testing.T) {
	v := loadVectors(t)
	opts := Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true}
	// flip replaces the base64 letter at i with another: the PEM still decodes, to other bytes.
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return b
	}
	// A byte inside the first certificate's signature (the last line of its base64).
	inSignature := func(b []byte) int { return bytes.Index(b, []byte("-----END CERTIFICATE-----")) - 10 }
	for _, tc := range []struct {
		name   string
		change func(quote []byte, c *Collateral) []byte
		reason Reason
	}{
		{"TCB Info", func(q []byte, c *Collateral) []byte {
			c.TCBInfo = bytes.Replace(bytes.Clone(c.TCBInfo), []byte(`"tcbEvaluationDataNumber":`), []byte(`"tcbEvaluationDataNumber": `), 1)
			return q
		}, ReasonCollateralSignature},
		{"QE Identity", func(q []byte, c *Collateral) []byte {
			c.QEIdentity = bytes.Replace(bytes.Clone(c.QEIdentity), []byte(`"tcbEvaluationDataNumber":`), []byte(`"tcbEvaluationDataNumber": `), 1)
			return q
		}, ReasonCollateralSignature},
		{"TCB signing chain", func(q []byte, c *Collateral) []byte {
			c.TCBSignChain = flip(c.TCBSignChain, inSignature(c.TCBSignChain))
			return q
		}, ReasonCollateralSignature},
		{"PCK chain", func(q []byte, _ *Collateral) []byte { return flip(q, inSignature(q)) }, ReasonPCKChain},
		{"QE report", func(q []byte, _ *Collateral) []byte {
			q = bytes.Clone(q)
			// Header 48, ISV report body 384, signature length 4, ISV signature 64, attestation
			// key 64: then the QE report body.
			q[48+384+4+64+64+100] ^= 1
			return q
		}, ReasonQESignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(v.quote, v.collateral(), opts)
			require.NoError(t, err)
			c := v.collateral()
			q := tc.change(v.quote, &c)
			_, err = Verify(q, c, opts)
			require.Error(t, err, "the changed input is checked again")
			assert.Equal(t, tc.reason, ReasonOf(err), "error: %v", err)
		})
	}
}

// A hash collision can only miss: an entry found by the hash of other bytes is not used.
func TestCacheCollisionMisses(t *testing.T) {
	v := loadVectors(t)
	opts := Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true}
	_, err := Verify(v.quote, v.collateral(), opts)
	require.NoError(t, err)
	tcbCerts, err := parsePEMChain(v.tcbChain)
	require.NoError(t, err)
	point, err := tcbCerts[0].PublicKey.(*ecdsa.PublicKey).Bytes()
	require.NoError(t, err)
	genuine := newKey("tcb-info", point, v.tcbInfo)
	opened, ok := parsed.get(genuine)
	require.True(t, ok, "the verified TCB Info is kept")

	forged := bytes.Replace(bytes.Clone(v.tcbInfo), []byte(`"tcbEvaluationDataNumber":`), []byte(`"tcbEvaluationDataNumber": `), 1)
	k := newKey("tcb-info", point, forged)
	// As if the forged document's hash were the genuine one's: its slot holds the genuine
	// document's bytes and result.
	parsed.m.Put(k.sum, entry[any]{key: genuine.encode(), v: opened})
	_, ok = parsed.get(k)
	assert.False(t, ok)
	c := v.collateral()
	c.TCBInfo = forged
	_, err = Verify(v.quote, c, opts)
	require.Error(t, err)
	assert.Equal(t, ReasonCollateralSignature, ReasonOf(err), "error: %v", err)
}

func TestKeyEqual(t *testing.T) {
	k := newKey("kind", []byte("ab"), []byte("c"))
	for _, tc := range []struct {
		name  string
		other key
		equal bool
	}{
		{"same bytes", newKey("kind", []byte("ab"), []byte("c")), true},
		{"a changed byte", newKey("kind", []byte("ab"), []byte("d")), false},
		{"parts split otherwise", newKey("kind", []byte("a"), []byte("bc")), false},
		{"another kind", newKey("kinc", []byte("ab"), []byte("c")), false},
		{"a part more", newKey("kind", []byte("ab"), []byte("c"), nil), false},
		{"a part less", newKey("kind", []byte("ab")), false},
		{"kind and part run together", newKey("kinda", []byte("b"), []byte("c")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.equal, tc.other.equal(k.encode()))
			assert.Equal(t, tc.equal, k.equal(tc.other.encode()))
		})
	}
	assert.False(t, k.equal(nil))
	assert.False(t, k.equal(k.encode()[:len(k.encode())-1]))
	assert.False(t, k.equal(append(k.encode(), 0)))
}

// A PCK chain that came with a quote is remembered only once it verified, and only in its
// canonical form: chains that do not chain to the root (junk sent by anyone), and the same
// certificates spaced otherwise, fill no cache.
func TestUnverifiedChainsAreNotCached(t *testing.T) {
	v := loadVectors(t)
	saved := parsed
	parsed = newCache[any]()
	t.Cleanup(func() { parsed = saved })
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	data := q.Signature.Certification.Data
	chainKey := newKey("pem-chain", bytes.TrimRight(data, "\x00"))

	otherRoot, _ := newTestCA(t)
	_, err = Verify(v.quote, v.collateral(), Options{Root: otherRoot, Now: time.Unix(validAt, 0), SkipRevocation: true})
	require.Error(t, err)
	assert.Equal(t, ReasonPCKChain, ReasonOf(err), "error: %v", err)
	_, cached := parsed.get(chainKey)
	assert.False(t, cached, "a chain that did not verify is not kept")

	// The same certificates with a blank line between them verify, but are not kept.
	i := bytes.Index(data, []byte("-----END CERTIFICATE-----\n")) + len("-----END CERTIFICATE-----\n")
	spaced := append(append(bytes.Clone(data[:i]), '\n'), data[i:]...)
	certs, keep, err := parsePEMChainCached(spaced)
	require.NoError(t, err)
	_, err = verifyChain(certs, IntelRoot(), time.Unix(validAt, 0), pckChainSpec)
	require.NoError(t, err)
	keep()
	assert.Zero(t, parsed.m.Len(), "a chain in another form than encoding/pem's is not kept")

	_, err = Verify(v.quote, v.collateral(), Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true})
	require.NoError(t, err)
	_, cached = parsed.get(chainKey)
	assert.True(t, cached, "a verified chain is kept")
}
