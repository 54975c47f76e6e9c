package dcap

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"

	"github.com/attestmesh/attestmesh/attest/capped"
)

// verified remembers the signature checks that succeeded, so that the collateral and PCK
// chains that every quote of a platform carries are verified once, not once per quote: a
// control plane attests many workloads on few platforms. A signature over the same bytes with
// the same key verifies forever; what depends on time (validity periods, freshness, CRL
// nextUpdate) and revocation is checked on every call. Failures are never remembered. Safe for
// concurrent use.
var verified = capped.New[[32]byte, struct{}](maxVerified)

// maxVerified bounds the caches; each starts over when full.
const maxVerified = 4096

// cacheKey hashes a kind and the length-prefixed parts that a check depends on.
func cacheKey(kind string, parts ...[]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(kind))
	var n [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// verifyRawCached is verifyRaw for signatures that recur (collateral, QE reports).
func verifyRawCached(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	point, err := pub.Bytes()
	if err != nil {
		return false
	}
	k := cacheKey("raw", point, msg, sig)
	if has(verified, k) {
		return true
	}
	if !verifyRaw(pub, msg, sig) {
		return false
	}
	verified.Put(k, struct{}{})
	return true
}

// checkCRLSignatureCached checks that crl is signed by issuer, once per CRL and issuer.
func checkCRLSignatureCached(crl *x509.RevocationList, issuer *x509.Certificate) error {
	k := cacheKey("crl", crl.Raw, issuer.Raw)
	if has(verified, k) {
		return nil
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return err
	}
	verified.Put(k, struct{}{})
	return nil
}

// chainKey identifies a chain with its root for verifyChain.
func chainKey(certs []*x509.Certificate, root *x509.Certificate) [32]byte {
	parts := make([][]byte, 0, len(certs)+1)
	for _, c := range certs {
		parts = append(parts, c.Raw)
	}
	return cacheKey("chain", append(parts, root.Raw)...)
}

// parsed keeps parses of collateral documents and certificate chains, by their bytes (and,
// for a signed document, the key that verified it): the same few recur in every quote of a
// platform. The values are shared: nobody may modify them.
var parsed = capped.New[[32]byte, any](maxVerified)

// parsePEMChainCached is parsePEMChain for chains that recur. The chain is remembered only
// when the caller calls keep, after it verified the chain: a chain that came with a quote is
// the caller's bytes, and junk must not fill the cache (nor, by filling it, empty it of the
// real platforms' chains).
func parsePEMChainCached(b []byte) (certs []*x509.Certificate, keep func(), err error) {
	k := cacheKey("pem-chain", b)
	if v, ok := parsed.Get(k); ok {
		return v.([]*x509.Certificate), func() {}, nil
	}
	if certs, err = parsePEMChain(b); err != nil {
		return nil, nil, err
	}
	return certs, func() { parsed.Put(k, certs) }, nil
}

// openCached returns the document that open verified and parsed from doc with key before,
// or calls open and keeps its result.
func openCached[T any](kind string, doc []byte, key *ecdsa.PublicKey, open func([]byte, *ecdsa.PublicKey) (*T, error)) (*T, error) {
	point, err := key.Bytes()
	if err != nil {
		return open(doc, key)
	}
	k := cacheKey(kind, point, doc)
	if v, ok := parsed.Get(k); ok {
		return v.(*T), nil
	}
	t, err := open(doc, key)
	if err != nil {
		return nil, err
	}
	parsed.Put(k, t)
	return t, nil
}

// parseCRLCached is parseCRL for the CRLs that every quote's collateral carries: the parse of
// the same bytes is kept. What the CRL says is still checked on every call (checkCRL: its
// signature, through the signature cache, and its dates; revokedAt: the serials).
func parseCRLCached(what string, b []byte) (*x509.RevocationList, error) {
	k := cacheKey("crl-parse", b)
	if v, ok := parsed.Get(k); ok {
		return v.(*x509.RevocationList), nil
	}
	crl, err := parseCRL(what, b)
	if err != nil {
		return nil, err
	}
	parsed.Put(k, crl)
	return crl, nil
}

// pckExtensionsCached is ParsePCKExtensions for the PCK certificate that every quote of a
// platform carries: the parse of the same certificate is kept.
func pckExtensionsCached(pck *x509.Certificate) (*PCKExtensions, error) {
	k := cacheKey("pck-extensions", pck.Raw)
	if v, ok := parsed.Get(k); ok {
		return v.(*PCKExtensions), nil
	}
	ext, err := ParsePCKExtensions(pck)
	if err != nil {
		return nil, err
	}
	parsed.Put(k, ext)
	return ext, nil
}

// has tells whether the set holds k.
func has(set *capped.Map[[32]byte, struct{}], k [32]byte) bool {
	_, ok := set.Get(k)
	return ok
}
