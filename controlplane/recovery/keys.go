package recovery

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// The algorithms that seal a share to a recovery key, as named in the record.
const (
	// AlgRSAOAEP is RSA-OAEP with SHA-256 (and MGF1-SHA-256) for RSA keys of MinRSABits or more;
	// the share's context is the OAEP label.
	AlgRSAOAEP = "rsa-oaep-sha256"
	// AlgHPKEX25519 is HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
	// and AES-256-GCM; the share's context is HPKE's info.
	AlgHPKEX25519 = "hpke-x25519-sha256-aes256gcm"
	// AlgHPKEP256 is the same with DHKEM(P-256, HKDF-SHA256).
	AlgHPKEP256 = "hpke-p256-sha256-aes256gcm"
)

// MinRSABits is the smallest RSA recovery key accepted (NIST SP 800-57: 128-bit security).
const MinRSABits = 3072

// maxRSABits bounds the RSA keys accepted (and the ciphertexts a record may hold).
const maxRSABits = 16384

// maxPEM bounds a key file.
const maxPEM = 64 << 10

// Fingerprint names a recovery key: SHA-256 of its public key's DER SubjectPublicKeyInfo, as
// `openssl pkey -pubin -in KEY.pub.pem -outform DER | sha256sum` prints it.
type Fingerprint [sha256.Size]byte

// String is "sha256:" and the hex digest.
func (f Fingerprint) String() string { return "sha256:" + hex.EncodeToString(f[:]) }

// ParseFingerprint parses the String form.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*len(f) {
		return f, fmt.Errorf("recovery: fingerprint %q: want sha256: and %d hex characters", clip(s), 2*len(f))
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return f, fmt.Errorf("recovery: fingerprint %q: not hex", clip(s))
	}
	return f, nil
}

// PublicKey is a recovery public key: RSA (MinRSABits or more), X25519 or P-256.
type PublicKey struct {
	fp   Fingerprint
	alg  string
	rsa  *rsa.PublicKey
	hpke hpke.PublicKey
}

// Fingerprint names the key.
func (k *PublicKey) Fingerprint() Fingerprint { return k.fp }

// Alg is the algorithm that seals shares to the key (AlgRSAOAEP, AlgHPKEX25519, AlgHPKEP256).
func (k *PublicKey) Alg() string { return k.alg }

// String names the key in messages: its fingerprint and algorithm.
func (k *PublicKey) String() string { return k.fp.String() + " (" + k.alg + ")" }

// PrivateKey is the private half of a recovery key (or of the key a share is sealed to for
// transport). Its String method names only the public fingerprint.
type PrivateKey struct {
	fp   Fingerprint
	alg  string
	rsa  *rsa.PrivateKey
	hpke hpke.PrivateKey
}

// Fingerprint names the key by its public half.
func (k *PrivateKey) Fingerprint() Fingerprint { return k.fp }

// String names the key by its public fingerprint, never its private bytes.
func (k *PrivateKey) String() string { return "private key " + k.fp.String() }

// GoString implements fmt.GoStringer as String does.
func (k *PrivateKey) GoString() string { return k.String() }

// ParsePublicKey parses a PEM public key: "PUBLIC KEY" (SubjectPublicKeyInfo, what
// `openssl pkey -pubout` writes) or "RSA PUBLIC KEY" (PKCS #1).
func ParsePublicKey(pemBytes []byte) (*PublicKey, error) {
	if len(pemBytes) > maxPEM {
		return nil, fmt.Errorf("recovery: %d bytes is too long for a public key", len(pemBytes))
	}
	var pub any
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("recovery: this is a private key (PEM %q): give the control plane the public key only "+
				"(openssl pkey -in KEY.pem -pubout -out KEY.pub.pem) and keep the private key offline", b.Type)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("recovery: PEM %q: %w", b.Type, err)
		}
		break
	}
	if pub == nil {
		return nil, errors.New(`recovery: no PEM "PUBLIC KEY" block`)
	}
	return newPublicKey(pub)
}

func newPublicKey(pub any) (*PublicKey, error) {
	fp, err := fingerprint(pub)
	if err != nil {
		return nil, err
	}
	k := &PublicKey{fp: fp}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if err := checkRSASize(p.N.BitLen()); err != nil {
			return nil, err
		}
		k.alg, k.rsa = AlgRSAOAEP, p
		return k, nil
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("recovery: EC key on %s: %s", p.Curve.Params().Name, supported)
		}
		e, err := p.ECDH()
		if err != nil {
			return nil, fmt.Errorf("recovery: %w", err)
		}
		return k.withHPKE(e)
	case *ecdh.PublicKey:
		return k.withHPKE(p)
	}
	return nil, fmt.Errorf("recovery: a %T key: %s", pub, supported)
}

const supported = "supported recovery keys are RSA of 3072 bits or more, X25519 and EC P-256"

func checkRSASize(bits int) error {
	if bits < MinRSABits {
		return fmt.Errorf("recovery: RSA key of %d bits: at least %d (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096)", bits, MinRSABits)
	}
	if bits > maxRSABits {
		return fmt.Errorf("recovery: RSA key of %d bits: at most %d", bits, maxRSABits)
	}
	return nil
}

func (k *PublicKey) withHPKE(e *ecdh.PublicKey) (*PublicKey, error) {
	alg, err := hpkeAlg(e.Curve())
	if err != nil {
		return nil, err
	}
	h, err := hpke.NewDHKEMPublicKey(e)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	k.alg, k.hpke = alg, h
	return k, nil
}

func hpkeAlg(c ecdh.Curve) (string, error) {
	switch c {
	case ecdh.X25519():
		return AlgHPKEX25519, nil
	case ecdh.P256():
		return AlgHPKEP256, nil
	}
	return "", fmt.Errorf("recovery: ECDH key on %s: %s", c, supported)
}

// fingerprint hashes the DER SubjectPublicKeyInfo of pub. P-256 keys are hashed in their
// id-ecPublicKey form, as openssl writes them, whether they were parsed as ECDSA or ECDH keys.
func fingerprint(pub any) (Fingerprint, error) {
	if e, ok := pub.(*ecdh.PublicKey); ok && e.Curve() == ecdh.P256() {
		p, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), e.Bytes())
		if err != nil {
			return Fingerprint{}, fmt.Errorf("recovery: %w", err)
		}
		pub = p
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("recovery: %s: %w", supported, err)
	}
	return sha256.Sum256(der), nil
}

// errEncryptedKey refuses an encrypted private key with the way to give it decrypted.
var errEncryptedKey = errors.New("recovery: the private key is encrypted: decrypt it into a pipe, never onto disk: " +
	"openssl pkey -in KEY.pem | attestmesh recover ... --key -")

// ParsePrivateKey parses a PEM private key: "PRIVATE KEY" (PKCS #8, what `openssl genpkey`
// writes), "RSA PRIVATE KEY" (PKCS #1) or "EC PRIVATE KEY" (SEC 1, what `openssl ecparam
// -genkey` writes). An encrypted key is refused with the command that decrypts it into a pipe.
// Errors never quote the key.
func ParsePrivateKey(pemBytes []byte) (*PrivateKey, error) {
	if len(pemBytes) > maxPEM {
		return nil, fmt.Errorf("recovery: %d bytes is too long for a private key", len(pemBytes))
	}
	var priv any
	for rest := pemBytes; priv == nil; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if _, encrypted := b.Headers["Proc-Type"]; encrypted {
			// Legacy PEM encryption (openssl -traditional -aes256): an "RSA PRIVATE KEY" or
			// "EC PRIVATE KEY" whose DER is ciphertext.
			return nil, errEncryptedKey
		}
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			priv, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			priv, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			priv, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errEncryptedKey
		case "PUBLIC KEY", "RSA PUBLIC KEY":
			return nil, errors.New("recovery: this is a public key: recovery needs the private key")
		default:
			continue
		}
		if err != nil {
			// The parsers' messages describe the structure, never the key's bytes.
			return nil, fmt.Errorf("recovery: PEM %q: %w", b.Type, err)
		}
	}
	if priv == nil {
		return nil, errors.New(`recovery: no PEM "PRIVATE KEY" block`)
	}
	return newPrivateKey(priv)
}

func newPrivateKey(priv any) (*PrivateKey, error) {
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		pub, err := newPublicKey(&p.PublicKey)
		if err != nil {
			return nil, err
		}
		return &PrivateKey{fp: pub.fp, alg: pub.alg, rsa: p}, nil
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("recovery: EC key on %s: %s", p.Curve.Params().Name, supported)
		}
		e, err := p.ECDH()
		if err != nil {
			return nil, fmt.Errorf("recovery: %w", err)
		}
		return newHPKEPrivateKey(e)
	case *ecdh.PrivateKey:
		return newHPKEPrivateKey(p)
	}
	return nil, fmt.Errorf("recovery: a %T key: %s", priv, supported)
}

func newHPKEPrivateKey(e *ecdh.PrivateKey) (*PrivateKey, error) {
	pub, err := newPublicKey(e.PublicKey())
	if err != nil {
		return nil, err
	}
	h, err := hpke.NewDHKEMPrivateKey(e)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	return &PrivateKey{fp: pub.fp, alg: pub.alg, hpke: h}, nil
}

// seal encrypts plaintext to k, binding context (OAEP label, HPKE info).
func (k *PublicKey) seal(context, plaintext []byte) ([]byte, error) {
	var ct []byte
	var err error
	switch k.alg {
	case AlgRSAOAEP:
		ct, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, k.rsa, plaintext, context)
	case AlgHPKEX25519, AlgHPKEP256:
		ct, err = hpke.Seal(k.hpke, hpke.HKDFSHA256(), hpke.AES256GCM(), context, plaintext)
	default:
		err = fmt.Errorf("unknown algorithm %q", k.alg)
	}
	if err != nil {
		return nil, fmt.Errorf("recovery: seal to %s: %w", k, err)
	}
	return ct, nil
}

// errOpen is what open returns whatever failed: the ciphertext, its context or the key.
var errOpen = errors.New("does not decrypt")

// open decrypts ciphertext sealed to k under alg with context.
func (k *PrivateKey) open(alg string, context, ciphertext []byte) ([]byte, error) {
	if alg != k.alg {
		return nil, fmt.Errorf("sealed with %s, the key is for %s: %w", alg, k.alg, errOpen)
	}
	var pt []byte
	var err error
	switch alg {
	case AlgRSAOAEP:
		pt, err = rsa.DecryptOAEP(sha256.New(), nil, k.rsa, ciphertext, context)
	case AlgHPKEX25519, AlgHPKEP256:
		pt, err = hpke.Open(k.hpke, hpke.HKDFSHA256(), hpke.AES256GCM(), context, ciphertext)
	default:
		err = fmt.Errorf("unknown algorithm %q", alg)
	}
	if err != nil {
		return nil, errOpen
	}
	return pt, nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	const n = 80
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
