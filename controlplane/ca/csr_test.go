package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCSR(t *testing.T) {
	p256 := mustCSR(t, mustKey(t, P256))
	badSig := bytes.Clone(p256)
	badSig[len(badSig)-1] ^= 0x01 // last byte of the ECDSA signature

	tests := []struct {
		name    string
		der     []byte
		wantAlg Algorithm
		wantErr string
	}{
		{name: "P-256", der: p256, wantAlg: P256},
		{name: "Ed25519", der: mustCSR(t, mustKey(t, Ed25519)), wantAlg: Ed25519},
		{name: "empty", der: nil, wantErr: "ca: parse CSR: empty"},
		{name: "too large", der: make([]byte, MaxCSRSize+1), wantErr: "ca: parse CSR: 8193 bytes, at most 8192 allowed"},
		{name: "garbage", der: []byte("not a CSR"), wantErr: "ca: parse CSR: asn1:"},
		{name: "trailing data", der: append(bytes.Clone(p256), 0), wantErr: "ca: parse CSR: asn1: syntax error: trailing data"},
		{name: "truncated", der: p256[:len(p256)-10], wantErr: "ca: parse CSR:"},
		{name: "P-384", der: mustCSR(t, mustKey(t, P384)),
			wantErr: "ca: parse CSR: CSR key is ECDSA P-384, only ECDSA P-256 and Ed25519 are accepted for SVIDs"},
		{name: "RSA-2048", der: mustCSR(t, mustKey(t, RSA2048)),
			wantErr: "ca: parse CSR: CSR key is RSA-2048, only ECDSA P-256 and Ed25519 are accepted for SVIDs"},
		{name: "bad signature", der: badSig, wantErr: "ca: parse CSR: CSR signature does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.der)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.Nil(t, csr)
				return
			}
			require.NoError(t, err)
			alg, err := AlgorithmOf(csr.PublicKey)
			require.NoError(t, err)
			assert.Equal(t, tt.wantAlg, alg)
		})
	}
}

// TestParseCSRRemembersWhatItAccepted checks the cache of accepted CSRs: the same bytes give the
// same parse, whatever the caller does to its copy afterwards; a refused CSR is refused every
// time (failures are not remembered); other bytes are parsed and checked on their own; and
// IssueSVID checks a CSR that ParseCSR did not return, however much it looks like one that it
// did.
func TestParseCSRRemembersWhatItAccepted(t *testing.T) {
	key := mustKey(t, P256)
	der := mustCSR(t, key)
	callers := bytes.Clone(der)
	first, err := ParseCSR(callers)
	require.NoError(t, err)
	require.True(t, acceptedCSRs.accepted(first))
	clear(callers) // the caller reuses its buffer: the cached parse keeps bytes of its own
	assert.Equal(t, der, first.Raw)

	second, err := ParseCSR(der)
	require.NoError(t, err)
	assert.Same(t, first, second, "the same bytes: the parse that was checked")

	other, err := ParseCSR(mustCSR(t, key)) // same key, another signature
	require.NoError(t, err)
	assert.NotSame(t, first, other)

	badSig := bytes.Clone(der)
	badSig[len(badSig)-1] ^= 0x01
	for range 2 {
		csr, err := ParseCSR(badSig)
		require.ErrorContains(t, err, "ca: parse CSR: CSR signature does not verify")
		require.Nil(t, csr)
	}

	// A parse made elsewhere, of the bad signature's bytes, with the checked parse's key:
	// IssueSVID cannot take it for one that ParseCSR accepted.
	forged, err := x509.ParseCertificateRequest(badSig)
	require.NoError(t, err)
	require.False(t, acceptedCSRs.accepted(forged))
	_, err = mustAuthority(t).IssueSVID(forged, spiffeid.RequireFromPath(testTD, "/a/b"), time.Minute, attestapi.TEESimulation)
	require.ErrorContains(t, err, "ca: issue SVID: CSR signature does not verify")
}

// TestParseCSRCacheIsBounded fills the cache of accepted CSRs past its bound: it starts over,
// and what it forgot is parsed and checked again.
func TestParseCSRCacheIsBounded(t *testing.T) {
	first, err := ParseCSR(mustCSR(t, mustKey(t, Ed25519)))
	require.NoError(t, err)
	filler, err := ParseCSR(mustCSR(t, mustKey(t, Ed25519)))
	require.NoError(t, err)
	for i := range maxAcceptedCSRs {
		var k [sha256.Size]byte
		binary.BigEndian.PutUint64(k[:], uint64(i))
		acceptedCSRs.put(k, filler)
		acceptedCSRs.mu.Lock()
		n := len(acceptedCSRs.m)
		acceptedCSRs.mu.Unlock()
		require.LessOrEqual(t, n, maxAcceptedCSRs)
	}
	require.False(t, acceptedCSRs.accepted(first), "forgotten once the cache started over")
	again, err := ParseCSR(first.Raw)
	require.NoError(t, err)
	assert.NotSame(t, first, again)
	assert.True(t, acceptedCSRs.accepted(again))
}

// FuzzParseCSR checks that ParseCSR never panics and that every CSR it accepts yields an SVID
// that go-spiffe verifies. Seeds: testdata/fuzz/FuzzParseCSR (real P-256, Ed25519, P-384 and
// RSA CSRs, a tampered signature) plus fresh CSRs.
func FuzzParseCSR(f *testing.F) {
	for _, alg := range []Algorithm{P256, Ed25519} {
		f.Add(mustCSR(f, mustKey(f, alg)))
	}
	a := mustAuthority(f)
	bundle := x509bundle.FromX509Authorities(testTD, a.Bundle())
	id := spiffeid.RequireFromPath(testTD, "/fuzz/svc")
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseCSR(der)
		if err != nil {
			require.Nil(t, csr)
			return
		}
		alg, err := AlgorithmOf(csr.PublicKey)
		require.NoError(t, err)
		require.Contains(t, []Algorithm{P256, Ed25519}, alg)
		chain, err := a.IssueSVID(csr, id, time.Minute, attestapi.TEESimulation)
		require.NoError(t, err)
		gotID, _, err := x509svid.Verify(chain, bundle)
		require.NoError(t, err)
		require.Equal(t, id, gotID)
	})
}

func BenchmarkIssueSVID(b *testing.B) {
	a := mustAuthority(b)
	csr, err := ParseCSR(mustCSR(b, mustKey(b, P256)))
	require.NoError(b, err)
	id := spiffeid.RequireFromPath(testTD, "/bench/svc")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.IssueSVID(csr, id, time.Hour, attestapi.TEESGX); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCSR parses a P-256 CSR: new each time (a workload's first attestation), and
// the same one again (attesting again with the same key).
func BenchmarkParseCSR(b *testing.B) {
	key := mustKey(b, P256)
	b.Run("new", func(b *testing.B) {
		ders := make([][]byte, 64)
		for i := range ders {
			ders[i] = mustCSR(b, key)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			acceptedCSRs.mu.Lock()
			acceptedCSRs.m = nil // as if never seen
			acceptedCSRs.mu.Unlock()
			if _, err := ParseCSR(ders[i%len(ders)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("again", func(b *testing.B) {
		der := mustCSR(b, key)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseCSR(der); err != nil {
				b.Fatal(err)
			}
		}
	})
}
