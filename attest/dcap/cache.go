package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"hash/maphash"

	"github.com/attestmesh/attestmesh/attest/capped"
)

// The caches below find an entry by a fast, non-cryptographic hash of what a result was
// computed from (hash/maphash, seeded at random per process), and every entry keeps its own
// copy of those bytes, which must equal them exactly: two inputs whose hashes collide can only
// miss each other's entry (and the later one takes the slot), never return the other's result.
// Keeping the bytes costs memory that SHA-256 keys did not, so only bytes that verified or
// that the control plane supplied itself are kept, in one canonical form each (see
// parsePEMChainCached), and each cache holds at most maxVerified entries.

// maxVerified bounds the caches; each starts over when full.
const maxVerified = 4096

// seed keys the caches' hash.
var seed = maphash.MakeSeed()

// key is what a cached result depends on: a kind and parts, each length-prefixed, so that no
// two different lists of them encode alike.
type key struct {
	kind  string
	parts [][]byte
	sum   uint64
}

func newKey(kind string, parts ...[]byte) key {
	var h maphash.Hash
	h.SetSeed(seed)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(kind)))
	_, _ = h.Write(n[:])
	_, _ = h.WriteString(kind)
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		_, _ = h.Write(n[:])
		_, _ = h.Write(p)
	}
	return key{kind: kind, parts: parts, sum: h.Sum64()}
}

// encode returns the key's kind and parts in one new slice: the bytes that an entry keeps.
func (k key) encode() []byte {
	size := 8 + len(k.kind)
	for _, p := range k.parts {
		size += 8 + len(p)
	}
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(k.kind)))
	b = append(b, k.kind...)
	for _, p := range k.parts {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

// equal reports whether b is k's encoding, without making it.
func (k key) equal(b []byte) bool {
	if len(b) < 8+len(k.kind) || binary.LittleEndian.Uint64(b) != uint64(len(k.kind)) || string(b[8:8+len(k.kind)]) != k.kind {
		return false
	}
	b = b[8+len(k.kind):]
	for _, p := range k.parts {
		if len(b) < 8 || binary.LittleEndian.Uint64(b) != uint64(len(p)) {
			return false
		}
		b = b[8:]
		if len(b) < len(p) || !bytes.Equal(b[:len(p)], p) {
			return false
		}
		b = b[len(p):]
	}
	return len(b) == 0
}

// cache maps keys to results, at most maxVerified of them. Safe for concurrent use.
type cache[V any] struct{ m *capped.Map[uint64, entry[V]] }

type entry[V any] struct {
	key []byte // key.encode() of what v was computed from
	v   V
}

func newCache[V any]() *cache[V] { return &cache[V]{m: capped.New[uint64, entry[V]](maxVerified)} }

// get returns the result kept for exactly k's bytes.
func (c *cache[V]) get(k key) (V, bool) {
	e, ok := c.m.Get(k.sum)
	if !ok || !k.equal(e.key) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put keeps v for k, with a copy of k's bytes.
func (c *cache[V]) put(k key, v V) { c.m.Put(k.sum, entry[V]{key: k.encode(), v: v}) }

// verified remembers the signature checks that succeeded, so that the collateral and PCK
// chains that every quote of a platform carries are verified once, not once per quote: a
// control plane attests many workloads on few platforms. A signature over the same bytes with
// the same key verifies forever; what depends on time (validity periods, freshness, CRL
// nextUpdate) and revocation is checked on every call. Failures are never remembered. Safe for
// concurrent use.
var verified = newCache[struct{}]()

// verifyRawCached is verifyRaw for signatures that recur (collateral, QE reports).
func verifyRawCached(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	point, err := pub.Bytes()
	if err != nil {
		return false
	}
	k := newKey("raw", point, msg, sig)
	if _, ok := verified.get(k); ok {
		return true
	}
	if !verifyRaw(pub, msg, sig) {
		return false
	}
	verified.put(k, struct{}{})
	return true
}

// checkCRLSignatureCached checks that crl is signed by issuer, once per CRL and issuer.
func checkCRLSignatureCached(crl *x509.RevocationList, issuer *x509.Certificate) error {
	k := newKey("crl", crl.Raw, issuer.Raw)
	if _, ok := verified.get(k); ok {
		return nil
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return err
	}
	verified.put(k, struct{}{})
	return nil
}

// chainKey identifies a chain with its root for verifyChain.
func chainKey(certs []*x509.Certificate, root *x509.Certificate) key {
	parts := make([][]byte, 0, len(certs)+1)
	for _, c := range certs {
		parts = append(parts, c.Raw)
	}
	return newKey("chain", append(parts, root.Raw)...)
}

// parsed keeps parses of collateral documents and certificate chains, by their bytes (and,
// for a signed document, the key that verified it): the same few recur in every quote of a
// platform. The values are shared: nobody may modify them.
var parsed = newCache[any]()

// parsePEMChainCached is parsePEMChain for chains that recur. The chain is remembered only
// when the caller calls keep, after it verified the chain: a chain that came with a quote is
// the caller's bytes, and junk must not fill the cache (nor, by filling it, empty it of the
// real platforms' chains). It is remembered only in its canonical form, the certificates as
// encoding/pem writes them (as Intel's are), trailing NUL bytes aside: the same certificates
// spaced otherwise would each take an entry (with its copy of the bytes), and are parsed
// every time instead.
func parsePEMChainCached(b []byte) (certs []*x509.Certificate, keep func(), err error) {
	k := newKey("pem-chain", bytes.TrimRight(b, "\x00"))
	if v, ok := parsed.get(k); ok {
		return v.([]*x509.Certificate), func() {}, nil
	}
	if certs, err = parsePEMChain(b); err != nil {
		return nil, nil, err
	}
	return certs, func() {
		if canonicalPEM(k.parts[0], certs) {
			parsed.put(k, certs)
		}
	}, nil
}

// canonicalPEM reports whether b is exactly certs encoded by encoding/pem, one after another.
func canonicalPEM(b []byte, certs []*x509.Certificate) bool {
	for _, c := range certs {
		block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if !bytes.HasPrefix(b, block) {
			return false
		}
		b = b[len(block):]
	}
	return len(b) == 0
}

// openCached returns the document that open verified and parsed from doc with key before,
// or calls open and keeps its result.
func openCached[T any](kind string, doc []byte, pub *ecdsa.PublicKey, open func([]byte, *ecdsa.PublicKey) (*T, error)) (*T, error) {
	point, err := pub.Bytes()
	if err != nil {
		return open(doc, pub)
	}
	k := newKey(kind, point, doc)
	if v, ok := parsed.get(k); ok {
		return v.(*T), nil
	}
	t, err := open(doc, pub)
	if err != nil {
		return nil, err
	}
	parsed.put(k, t)
	return t, nil
}

// parseCRLCached is parseCRL for the CRLs that every quote's collateral carries: the parse of
// the same bytes is kept. What the CRL says is still checked on every call (checkCRL: its
// signature, through the signature cache, and its dates; revokedAt: the serials).
func parseCRLCached(what string, b []byte) (*x509.RevocationList, error) {
	k := newKey("crl-parse", b)
	if v, ok := parsed.get(k); ok {
		return v.(*x509.RevocationList), nil
	}
	crl, err := parseCRL(what, b)
	if err != nil {
		return nil, err
	}
	parsed.put(k, crl)
	return crl, nil
}

// pckExtensionsCached is ParsePCKExtensions for the PCK certificate that every quote of a
// platform carries: the parse of the same certificate is kept.
func pckExtensionsCached(pck *x509.Certificate) (*PCKExtensions, error) {
	k := newKey("pck-extensions", pck.Raw)
	if v, ok := parsed.get(k); ok {
		return v.(*PCKExtensions), nil
	}
	ext, err := ParsePCKExtensions(pck)
	if err != nil {
		return nil, err
	}
	parsed.put(k, ext)
	return ext, nil
}
