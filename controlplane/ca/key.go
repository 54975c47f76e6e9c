package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Algorithm names a key type and size, spelled as in the session language.
type Algorithm string

// The key algorithms a private-key secret may use. P256 is the default.
const (
	P256    Algorithm = "P-256"
	P384    Algorithm = "P-384"
	Ed25519 Algorithm = "Ed25519"
	RSA2048 Algorithm = "RSA-2048"
	RSA3072 Algorithm = "RSA-3072"
)

// DefaultAlgorithm is what a private-key secret gets when it names no algorithm.
const DefaultAlgorithm = P256

// Algorithms lists every supported algorithm, the default first.
func Algorithms() []Algorithm { return []Algorithm{P256, P384, Ed25519, RSA2048, RSA3072} }

const pemPrivateKey = "PRIVATE KEY"

// ParseAlgorithm reads an algorithm name; the empty string means DefaultAlgorithm. Names are
// matched exactly, as the session language spells them ("P-256", "Ed25519", "RSA-3072").
func ParseAlgorithm(s string) (Algorithm, error) {
	if s == "" {
		return DefaultAlgorithm, nil
	}
	for _, a := range Algorithms() {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("ca: unknown key algorithm %q (known: %s)", s, algorithmList())
}

func algorithmList() string {
	names := make([]string, 0, len(Algorithms()))
	for _, a := range Algorithms() {
		names = append(names, string(a))
	}
	return strings.Join(names, ", ")
}

// GenerateKey generates a private key of the given algorithm ("" means DefaultAlgorithm).
func GenerateKey(alg Algorithm) (crypto.Signer, error) {
	if alg == "" {
		alg = DefaultAlgorithm
	}
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case P256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case Ed25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, fmt.Errorf("ca: unknown key algorithm %q (known: %s)", alg, algorithmList())
	}
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", alg, err)
	}
	return key, nil
}

// AlgorithmOf reports the algorithm of a public key (or of a crypto.Signer's public key), or
// an error naming the key type when it is not one of the supported algorithms.
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	alg, err := keyAlgorithm(pub)
	if err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	return alg, nil
}

// keyAlgorithm is AlgorithmOf without the package prefix on errors.
func keyAlgorithm(pub crypto.PublicKey) (Algorithm, error) {
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "", errors.New("unsupported public key: nil ECDSA key")
		}
		switch k.Curve {
		case elliptic.P256():
			return P256, nil
		case elliptic.P384():
			return P384, nil
		}
		return "", fmt.Errorf("unsupported public key: ECDSA %s (supported: %s)", k.Curve.Params().Name, algorithmList())
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("unsupported public key: Ed25519 key of %d bytes", len(k))
		}
		return Ed25519, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "", errors.New("unsupported public key: nil RSA key")
		}
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		}
		return "", fmt.Errorf("unsupported public key: RSA-%d (supported: %s)", k.N.BitLen(), algorithmList())
	default:
		return "", fmt.Errorf("unsupported public key type %T (supported: %s)", pub, algorithmList())
	}
}

// MarshalKeyPEM encodes a private key as a PKCS#8 "PRIVATE KEY" PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	if _, err := AlgorithmOf(key); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKeyPEM decodes one PKCS#8 "PRIVATE KEY" PEM block holding a key of a supported
// algorithm. Anything but whitespace after the block is refused.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("ca: parse private key: no PEM block found")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("ca: parse private key: PEM block type %q, want %q (PKCS#8)", block.Type, pemPrivateKey)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("ca: parse private key: data after the PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's message names the structure, never the key bytes.
		return nil, fmt.Errorf("ca: parse private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: parse private key: %T cannot sign", key)
	}
	if _, err := AlgorithmOf(signer); err != nil {
		return nil, err
	}
	return signer, nil
}

// PublicKeyHash is SHA-256 of the DER SubjectPublicKeyInfo of pub: the first half of the
// attestation REPORTDATA (see the package documentation).
func PublicKeyHash(pub crypto.PublicKey) ([32]byte, error) {
	h, err := spkiHash(pub)
	if err != nil {
		return h, fmt.Errorf("ca: public key hash: %w", err)
	}
	return h, nil
}

func spkiHash(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(der), nil
}
