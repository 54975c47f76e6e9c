package recovery

import (
	"encoding/base64"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSharePEMRoundTrip(t *testing.T) {
	key := randomKey(t)
	r := sealTo(t, key, holders[:3], 2)
	shares := decrypt(t, r, "rsa3072", "p256-sec1")
	var file []byte
	for _, s := range shares {
		file = append(file, s.MarshalPEM()...)
	}
	assert.Contains(t, string(file), "-----BEGIN ATTESTMESH RECOVERY SHARE-----\nIndex: 1\nKey: sha256:")
	plain, sealed, err := ParseShares(append([]byte("shares for the combiner\n"), file...))
	require.NoError(t, err)
	assert.Empty(t, sealed)
	require.Len(t, plain, 2)
	got, err := Combine(r, plain)
	require.NoError(t, err)
	assert.Equal(t, key, got)
}

func TestSealedShares(t *testing.T) {
	key := randomKey(t)
	r := sealTo(t, key, holders[:3], 2)
	combiner := testPublicKey(t, "x25519-b")
	var file []byte
	for _, s := range decrypt(t, r, "rsa3072", "x25519-a") {
		b, err := s.SealTo(combiner)
		require.NoError(t, err)
		plain, _ := pem.Decode(s.MarshalPEM())
		assert.NotContains(t, string(b), base64.StdEncoding.EncodeToString(plain.Bytes)[:16], "the sealed form does not hold the value")
		file = append(file, b...)
	}
	assert.Contains(t, string(file), "To: "+combiner.Fingerprint().String())
	plain, sealed, err := ParseShares(file)
	require.NoError(t, err)
	assert.Empty(t, plain)
	require.Len(t, sealed, 2)

	// Only the combiner's key opens them.
	_, err = sealed[0].Open(testPrivateKey(t, "x25519-a"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sealed to "+combiner.Fingerprint().String()+", not to")

	priv := testPrivateKey(t, "x25519-b")
	var opened []*Share
	for _, s := range sealed {
		o, err := s.Open(priv)
		require.NoError(t, err)
		opened = append(opened, o)
	}
	got, err := Combine(r, opened)
	require.NoError(t, err)
	assert.Equal(t, key, got)

	// A changed header (another index) no longer opens: the context binds it.
	blk, _ := pem.Decode(file)
	blk.Headers["Index"] = "3"
	_, sealed, err = ParseShares(pem.EncodeToMemory(blk))
	require.NoError(t, err)
	_, err = sealed[0].Open(priv)
	require.ErrorIs(t, err, ErrTampered)
	assert.Contains(t, err.Error(), "changed on the way")
}

func TestSealSharesToEveryKind(t *testing.T) {
	key := randomKey(t)
	r := sealTo(t, key, holders[:1], 1)
	s := decrypt(t, r, "rsa3072")[0]
	for _, to := range []string{"rsa4096", "p256-pkcs8", "x25519-a"} {
		b, err := s.SealTo(testPublicKey(t, to))
		require.NoError(t, err, to)
		_, sealed, err := ParseShares(b)
		require.NoError(t, err, to)
		o, err := sealed[0].Open(testPrivateKey(t, to))
		require.NoError(t, err, to)
		got, err := Combine(r, []*Share{o})
		require.NoError(t, err, to)
		assert.Equal(t, key, got, to)
	}
}

func TestParseSharesRefuses(t *testing.T) {
	r := sealTo(t, randomKey(t), holders[:1], 1)
	s := decrypt(t, r, "rsa3072")[0]
	blk, _ := pem.Decode(s.MarshalPEM())
	with := func(f func(b *pem.Block)) []byte {
		c := &pem.Block{Type: blk.Type, Bytes: append([]byte{}, blk.Bytes...), Headers: map[string]string{}}
		for k, v := range blk.Headers {
			c.Headers[k] = v
		}
		f(c)
		return pem.EncodeToMemory(c)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"nothing", []byte("hello\n"), "no \"ATTESTMESH RECOVERY SHARE\" or"},
		{"a key", readTestdata(t, "x25519-a.pub.pem"), `PEM block 1 is a "PUBLIC KEY", not a recovery share`},
		{"short value", with(func(b *pem.Block) { b.Bytes = b.Bytes[:31] }), "31 bytes, want 32"},
		{"index zero", with(func(b *pem.Block) { b.Headers["Index"] = "0" }), "header Index: want 1 to 255"},
		{"index 256", with(func(b *pem.Block) { b.Headers["Index"] = "256" }), "header Index: want 1 to 255"},
		{"bad record", with(func(b *pem.Block) { b.Headers["Record"] = "x" }), "header Record: want 32 hex characters"},
		{"bad key", with(func(b *pem.Block) { b.Headers["Key"] = "x" }), "header Key: recovery: fingerprint"},
		{"extra header", with(func(b *pem.Block) { b.Headers["Note"] = "x" }), "want the headers Record, Index and Key only"},
		{"sealed without To", with(func(b *pem.Block) { b.Type = pemSealedShare }), "want the headers Record, Index, Key, To and Alg only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseShares(tc.in)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "BEGIN", "no PEM quoted")
		})
	}
}
