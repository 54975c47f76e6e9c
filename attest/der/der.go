// Package der encodes and signs the two X.509 structures that every attestation makes: the
// workload's certificate signing request and the SVID that the control plane issues for it.
//
// crypto/x509 builds both with encoding/asn1's reflection, and then verifies the signature it
// has just made, to catch a crypto.Signer that misbehaves (a faulty HSM, or a fault during an
// RSA-CRT signature, which leaks the key). On the attestation path that check was the
// control plane's second-largest cost, an ECDSA verification per SVID. This package builds the
// same bytes with cryptobyte and signs once. It signs only with the standard library's own
// in-memory keys, ECDSA P-256 and P-384 and Ed25519; anything else is ErrUnsupported and the
// caller uses crypto/x509. An ECDSA signature is not checked: its nonce is hedged (random and
// derived from the key and message), so a fault in one signature does not combine with another
// into the key. An Ed25519 signature is deterministic, and a workload signs the same CSR again
// at every attestation: a faulty signature beside a correct one of the same message gives the
// key away, so Ed25519 signatures are checked as crypto/x509 does (a verification costs less
// than an ECDSA one). Its tests compare every structure, byte for byte, with crypto/x509's.
package der

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ErrUnsupported is returned for a signing key this package does not sign with: the caller
// uses crypto/x509 instead.
var ErrUnsupported = errors.New("der: unsupported signing key")

// Object identifiers, as crypto/x509 uses them.
var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}

	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}

	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// algorithm is how a key signs: the AlgorithmIdentifier's OID and the hash of the signed
// bytes (0: the bytes themselves, Ed25519).
type algorithm struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}

// algorithmOf returns the signature algorithm crypto/x509 would choose for key, for the key
// types this package signs with.
func algorithmOf(key crypto.Signer) (algorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return algorithm{oidECDSAWithSHA256, crypto.SHA256}, nil
		case elliptic.P384():
			return algorithm{oidECDSAWithSHA384, crypto.SHA384}, nil
		}
	case ed25519.PrivateKey:
		return algorithm{oidEd25519, 0}, nil
	}
	return algorithm{}, fmt.Errorf("%w: %T", ErrUnsupported, key)
}

// Supported reports whether this package signs with key.
func Supported(key crypto.Signer) bool {
	_, err := algorithmOf(key)
	return err == nil
}

// signed returns the SEQUENCE of tbs, the algorithm's identifier and key's signature of tbs:
// a Certificate or a CertificationRequest.
func signed(rand io.Reader, key crypto.Signer, alg algorithm, tbs []byte) ([]byte, error) {
	msg := tbs
	if alg.hash != 0 {
		h := alg.hash.New()
		h.Write(tbs)
		msg = h.Sum(nil)
	}
	sig, err := key.Sign(rand, msg, alg.hash)
	if err != nil {
		return nil, fmt.Errorf("der: sign: %w", err)
	}
	if k, ok := key.(ed25519.PrivateKey); ok && !ed25519.Verify(k.Public().(ed25519.PublicKey), msg, sig) {
		return nil, errors.New("der: sign: the Ed25519 signature does not verify with the key's public half (a faulty key or signature)")
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addAlgorithm(b, alg)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// addAlgorithm adds alg's AlgorithmIdentifier: no parameters, for ECDSA (RFC 5758) and Ed25519
// (RFC 8410) alike.
func addAlgorithm(b *cryptobyte.Builder, alg algorithm) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(alg.oid) })
}

// CertificateRequest returns a PKCS #10 certificate signing request for key's public key,
// signed by key, with an empty subject and no attributes: what
// x509.CreateCertificateRequest makes of an empty template.
func CertificateRequest(rand io.Reader, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmOf(key)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("der: certificate request: %w", err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 512))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)                                        // version 1
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // subject: empty RDNSequence
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(*cryptobyte.Builder) {}) // attributes: none
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("der: certificate request: %w", err)
	}
	return signed(rand, key, alg, tbs)
}

// Certificate is what an X.509 v3 certificate holds besides its issuer's signature.
type Certificate struct {
	SerialNumber *big.Int // positive
	Issuer       []byte   // the issuer's Name, DER (its RawSubject)
	Subject      []byte   // Name, DER
	NotBefore    time.Time
	NotAfter     time.Time
	PublicKey    []byte // SubjectPublicKeyInfo, DER (x509.MarshalPKIXPublicKey)
	Extensions   []pkix.Extension
}

// CreateCertificate returns c signed by key, in DER.
func CreateCertificate(rand io.Reader, c *Certificate, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmOf(key)
	if err != nil {
		return nil, err
	}
	if c.SerialNumber == nil || c.SerialNumber.Sign() <= 0 {
		return nil, errors.New("der: certificate: the serial number must be positive")
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 1024)) // an SVID's TBSCertificate is about 500 bytes
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // version 3
		})
		b.AddASN1BigInt(c.SerialNumber)
		addAlgorithm(b, alg)
		b.AddBytes(c.Issuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, c.NotBefore)
			addTime(b, c.NotAfter)
		})
		b.AddBytes(c.Subject)
		b.AddBytes(c.PublicKey)
		if len(c.Extensions) > 0 {
			b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, e := range c.Extensions {
						addExtension(b, e)
					}
				})
			})
		}
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("der: certificate: %w", err)
	}
	return signed(rand, key, alg, tbs)
}

// addTime adds t as RFC 5280 section 4.1.2.5 has it, as encoding/asn1 does: UTCTime for the
// years 1950 to 2049, GeneralizedTime otherwise; whole seconds, UTC.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("060102150405Z"))) })
		return
	}
	b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("20060102150405Z"))) })
}

// addExtension adds e; criticality is encoded only when true (DER omits a DEFAULT value).
func addExtension(b *cryptobyte.Builder, e pkix.Extension) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(e.Id)
		if e.Critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1OctetString(e.Value)
	})
}

// SVIDExtensions returns an X.509-SVID's extensions, in crypto/x509's order: key usage
// digitalSignature (critical), extended key usage serverAuth and clientAuth, basic
// constraints "not a CA" (critical), the subject and authority key identifiers (the latter
// omitted when empty), the URI SAN uri (critical when the subject is empty, RFC 5280 section
// 4.2.1.6), then extra.
func SVIDExtensions(ski, aki []byte, uri string, subjectEmpty bool, extra ...pkix.Extension) ([]pkix.Extension, error) {
	if !isIA5(uri) {
		return nil, fmt.Errorf("der: SVID: URI SAN %q is not ASCII", uri)
	}
	exts := make([]pkix.Extension, 0, 6+len(extra))
	exts = append(exts,
		// BIT STRING with one bit, digitalSignature (bit 0): seven unused bits, then 0x80.
		pkix.Extension{Id: oidKeyUsage, Critical: true, Value: []byte{0x03, 0x02, 0x07, 0x80}},
		pkix.Extension{Id: oidExtKeyUsage, Value: sequence(func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidServerAuth)
			b.AddASN1ObjectIdentifier(oidClientAuth)
		})},
		// BasicConstraints: cA FALSE and no pathLenConstraint are both defaults, so omitted.
		pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: []byte{0x30, 0x00}},
		pkix.Extension{Id: oidSubjectKeyID, Value: octetString(ski)},
	)
	if len(aki) > 0 {
		exts = append(exts, pkix.Extension{Id: oidAuthorityKeyID, Value: sequence(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(aki) })
		})})
	}
	exts = append(exts, pkix.Extension{Id: oidSubjectAltName, Critical: subjectEmpty, Value: sequence(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(uri)) })
	})})
	return append(exts, extra...), nil
}

func sequence(f cryptobyte.BuilderContinuation) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, f)
	return b.BytesOrPanic() // the continuations above add nothing that can fail
}

func octetString(v []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1OctetString(v)
	return b.BytesOrPanic()
}

func isIA5(s string) bool {
	for i := range len(s) {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}
