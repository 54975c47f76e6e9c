package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"fmt"
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
			alg, err := AlgorithmOf(csr.PublicKey())
			require.NoError(t, err)
			assert.Equal(t, tt.wantAlg, alg)
		})
	}
}

// TestParseCSRRemembersWhatWasIssued checks the cache of CSRs: a CSR is remembered only once
// IssueSVID issued an SVID for it (a refused attestation leaves nothing); then the same bytes
// give the same CSR, however the caller reuses its buffer; a refused CSR is refused every
// time; other bytes are parsed and checked on their own; and what a CSR hands out is a copy.
func TestParseCSRRemembersWhatWasIssued(t *testing.T) {
	a := mustAuthority(t)
	id := spiffeid.RequireFromPath(testTD, "/a/b")
	key := mustKey(t, P256)
	der := mustCSR(t, key)
	callers := bytes.Clone(der)
	first, err := ParseCSR(callers)
	require.NoError(t, err)
	notYet, err := ParseCSR(der)
	require.NoError(t, err)
	assert.NotSame(t, first, notYet, "not remembered before an SVID is issued")

	_, err = a.IssueSVID(first, id, time.Minute, attestapi.TEESimulation)
	require.NoError(t, err)
	clear(callers) // the caller reuses its buffer: the CSR has bytes of its own
	second, err := ParseCSR(der)
	require.NoError(t, err)
	assert.Same(t, first, second, "the same bytes: the CSR that was checked")
	chain, err := a.IssueSVID(second, id, time.Minute, attestapi.TEESimulation)
	require.NoError(t, err)
	assert.Equal(t, key.Public(), chain[0].PublicKey)

	spki := second.RawSubjectPublicKeyInfo()
	clear(spki)
	assert.Equal(t, chain[0].RawSubjectPublicKeyInfo, second.RawSubjectPublicKeyInfo(), "a copy")
	pub := second.PublicKey().(*ecdsa.PublicKey)
	other := mustKey(t, P256).Public().(*ecdsa.PublicKey)
	*pub = *other
	assert.Equal(t, key.Public(), second.PublicKey(), "a copy")

	again, err := ParseCSR(mustCSR(t, key)) // same key, another signature
	require.NoError(t, err)
	assert.NotSame(t, first, again)

	badSig := bytes.Clone(der)
	badSig[len(badSig)-1] ^= 0x01
	for range 2 {
		csr, err := ParseCSR(badSig)
		require.ErrorContains(t, err, "ca: parse CSR: CSR signature does not verify")
		require.Nil(t, csr)
	}
}

// TestParseCSRKeepsOnlyTheKey checks that a CSR holds its key and nothing else of what it was
// parsed from: a CSR with many SANs, the largest ParseCSR reads, costs what an empty one does.
func TestParseCSRKeepsOnlyTheKey(t *testing.T) {
	key := mustKey(t, Ed25519)
	tmpl := &x509.CertificateRequest{}
	for i := 0; ; i++ {
		tmpl.DNSNames = append(tmpl.DNSNames, fmt.Sprintf("n%d.example", i))
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		require.NoError(t, err)
		if len(der) > MaxCSRSize {
			tmpl.DNSNames = tmpl.DNSNames[:len(tmpl.DNSNames)-1]
			break
		}
	}
	big, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	require.Greater(t, len(big), MaxCSRSize-64)
	csr, err := ParseCSR(big)
	require.NoError(t, err)
	small, err := ParseCSR(mustCSR(t, key))
	require.NoError(t, err)
	assert.Equal(t, CSR{pub: csr.pub, spki: csr.spki, sum: small.sum}, *small, "the same key, nothing else")
	clear(big) // the caller reuses its buffer: key and SPKI have bytes of their own
	assert.Equal(t, small.spki, csr.spki)
	assert.Equal(t, small.pub, csr.pub)
}

// TestParseCSRCacheIsBounded fills the cache of CSRs past its bound: it starts over, and what
// it forgot is parsed and checked again.
func TestParseCSRCacheIsBounded(t *testing.T) {
	a := mustAuthority(t)
	id := spiffeid.RequireFromPath(testTD, "/a/b")
	der := mustCSR(t, mustKey(t, Ed25519))
	first, err := ParseCSR(der)
	require.NoError(t, err)
	_, err = a.IssueSVID(first, id, time.Minute, attestapi.TEESimulation)
	require.NoError(t, err)
	got, _ := issuedCSRs.Get(first.sum)
	require.Same(t, first, got)
	for i := range maxIssuedCSRs {
		filler := *first
		binary.BigEndian.PutUint64(filler.sum[:], uint64(i))
		issuedCSRs.Put(filler.sum, &filler)
		require.LessOrEqual(t, issuedCSRs.Len(), maxIssuedCSRs)
	}
	_, ok := issuedCSRs.Get(first.sum)
	require.False(t, ok, "forgotten once the cache started over")
	again, err := ParseCSR(der)
	require.NoError(t, err)
	assert.NotSame(t, first, again, "parsed and checked again")
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
		alg, err := AlgorithmOf(csr.PublicKey())
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
	// der is what the attestation API issues (IssueSVIDDER), parsed IssueSVID.
	b.Run("der", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.IssueSVIDDER(csr, id, time.Hour, attestapi.TEESGX); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parsed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.IssueSVID(csr, id, time.Hour, attestapi.TEESGX); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParseCSR parses a P-256 CSR: new each time (a workload's first attestation), and
// one that an SVID was issued for (attesting again with the same key).
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
			if _, err := ParseCSR(ders[i%len(ders)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("again", func(b *testing.B) {
		der := mustCSR(b, key)
		csr, err := ParseCSR(der)
		require.NoError(b, err)
		_, err = mustAuthority(b).IssueSVID(csr, spiffeid.RequireFromPath(testTD, "/bench/svc"), time.Hour, attestapi.TEESGX)
		require.NoError(b, err)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseCSR(der); err != nil {
				b.Fatal(err)
			}
		}
	})
}
