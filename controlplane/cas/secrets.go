package cas

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// storedSecret is a generated secret as kept in a session's record (the record is encrypted at
// rest by the store).
type storedSecret struct {
	Kind      session.Kind      `json:"kind"`
	Bytes     []byte            `json:"bytes,omitempty"`     // ascii, binary
	Algorithm session.Algorithm `json:"algorithm,omitempty"` // private-key, and a certificate's implicit key
	KeyPEM    []byte            `json:"key,omitempty"`       // private-key; a certificate's key
	CertPEM   []byte            `json:"cert,omitempty"`      // x509, x509-ca
	ChainPEM  []byte            `json:"chain,omitempty"`     // x509, x509-ca: cert then issuers to the root
	// KeyRef is the private-key secret a certificate uses; empty when its key is implicit.
	KeyRef string `json:"key_ref,omitempty"`
}

func (s storedSecret) value() session.Value {
	return session.Value{Kind: s.Kind, Bytes: s.Bytes, KeyPEM: s.KeyPEM, CertPEM: s.CertPEM, ChainPEM: s.ChainPEM}
}

// generator materialises a session's secrets, keeping what the update rules keep.
type generator struct {
	ctx   context.Context
	s     *session.Session
	prev  map[string]storedSecret
	now   time.Time
	rand  io.Reader
	slots chan struct{} // RSA key generations under way, bounded; nil: unbounded

	out     map[string]storedSecret
	keys    map[string]crypto.Signer // parsed keys of out, by secret name
	certs   map[string]*x509.Certificate
	changed []string
}

// generate returns the secrets of s within the CAS's limits (checked before anything is
// generated, and the stored size again after). With prev (an update), private keys and
// ascii/binary values are kept when their definition still fits, and every certificate is
// re-issued from its (kept) key. It returns the names of the secrets that were generated or
// re-issued. Generation stops when ctx is done.
func (c *CAS) generate(ctx context.Context, s *session.Session, prev map[string]storedSecret) (map[string]storedSecret, []string, error) {
	if err := c.checkLimits(s, prev); err != nil {
		return nil, nil, err
	}
	out, changed, err := generate(ctx, s, prev, c.now(), c.rand, c.rsaSlots)
	if err != nil {
		return nil, nil, err
	}
	total := 0
	for _, v := range out {
		total += len(v.Bytes) + len(v.KeyPEM) + len(v.CertPEM) + len(v.ChainPEM)
	}
	if total > c.limits.MaxGeneratedBytes {
		return nil, nil, limitf(LimitGeneratedBytes, "session %q: its secrets take %d bytes, at most %d are kept per session", s.Name, total, c.limits.MaxGeneratedBytes)
	}
	return out, changed, nil
}

// checkLimits refuses, before any work, a session with too many secrets, too many declared
// value bytes or too many new RSA keys.
func (c *CAS) checkLimits(s *session.Session, prev map[string]storedSecret) error {
	if n := len(s.Secrets); n > c.limits.MaxSecrets {
		return limitf(LimitSecrets, "session %q has %d secrets, at most %d are allowed per session", s.Name, n, c.limits.MaxSecrets)
	}
	declared, newRSA := 0, 0
	for i := range s.Secrets {
		def := &s.Secrets[i]
		switch {
		case def.Import != nil:
		case def.Kind == session.KindASCII || def.Kind == session.KindBinary:
			declared += max(def.EffectiveSize(), len(def.Value))
		case def.Kind == session.KindPrivateKey:
			alg := def.EffectiveAlgorithm()
			p, kept := prev[def.Name]
			if (alg == session.AlgorithmRSA2048 || alg == session.AlgorithmRSA3072) && (!kept || p.Kind != def.Kind || p.Algorithm != alg) {
				newRSA++
			}
		}
	}
	if declared > c.limits.MaxGeneratedBytes {
		return limitf(LimitGeneratedBytes, "session %q: its ascii and binary secrets take %d bytes, at most %d are kept per session", s.Name, declared, c.limits.MaxGeneratedBytes)
	}
	if newRSA > c.limits.MaxNewRSAKeys {
		return limitf(LimitKeyGeneration, "session %q needs %d new RSA keys, at most %d are generated per request (create the session in steps, or use P-256 keys)",
			s.Name, newRSA, c.limits.MaxNewRSAKeys)
	}
	return nil
}

// generate returns the secrets of s; see CAS.generate.
func generate(ctx context.Context, s *session.Session, prev map[string]storedSecret, now time.Time, r io.Reader, slots chan struct{}) (map[string]storedSecret, []string, error) {
	if r == nil {
		r = rand.Reader
	}
	g := &generator{
		ctx: ctx, s: s, prev: prev, now: now, rand: r, slots: slots,
		out: map[string]storedSecret{}, keys: map[string]crypto.Signer{}, certs: map[string]*x509.Certificate{},
	}
	for i := range s.Secrets {
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("cas: generating the secrets of %q: %w", s.Name, err)
		}
		def := &s.Secrets[i]
		if def.Import != nil {
			continue
		}
		var err error
		switch def.Kind {
		case session.KindASCII, session.KindBinary:
			err = g.value(def)
		case session.KindPrivateKey:
			_, err = g.privateKey(def)
		case session.KindX509, session.KindX509CA:
			err = g.certificate(def, nil)
		default:
			err = fmt.Errorf("cas: secret %q: unknown kind %q", def.Name, def.Kind)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return g.out, g.changed, nil
}

const asciiAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func (g *generator) value(def *session.Secret) error {
	var b []byte
	switch {
	case def.Value != "" && def.Kind == session.KindASCII:
		b = []byte(def.Value)
	case def.Value != "":
		v, err := base64.StdEncoding.DecodeString(def.Value)
		if err != nil {
			return errorf(CodeInvalid, nil, "secret %q: value is not standard base64", def.Name)
		}
		b = v
	default:
		if p, ok := g.prev[def.Name]; ok && p.Kind == def.Kind && len(p.Bytes) == def.EffectiveSize() {
			b = p.Bytes
			break
		}
		b = make([]byte, def.EffectiveSize())
		if def.Kind == session.KindBinary {
			if _, err := io.ReadFull(g.rand, b); err != nil {
				return fmt.Errorf("cas: secret %q: %w", def.Name, err)
			}
		} else {
			for i := range b {
				n, err := rand.Int(g.rand, big.NewInt(int64(len(asciiAlphabet))))
				if err != nil {
					return fmt.Errorf("cas: secret %q: %w", def.Name, err)
				}
				b[i] = asciiAlphabet[n.Int64()]
			}
		}
		g.changed = append(g.changed, def.Name)
	}
	g.out[def.Name] = storedSecret{Kind: def.Kind, Bytes: b}
	return nil
}

// privateKey returns the key of a private-key secret, generating it unless the previous
// version holds one of the same algorithm.
func (g *generator) privateKey(def *session.Secret) (crypto.Signer, error) {
	if k, ok := g.keys[def.Name]; ok {
		return k, nil
	}
	alg := def.EffectiveAlgorithm()
	key, keyPEM, err := g.keepOrGenerate(def.Name, session.KindPrivateKey, alg)
	if err != nil {
		return nil, err
	}
	g.keys[def.Name] = key
	g.out[def.Name] = storedSecret{Kind: session.KindPrivateKey, Algorithm: alg, KeyPEM: keyPEM}
	return key, nil
}

// keepOrGenerate returns the previous key of secret name when it had the same kind and
// algorithm, else a new one.
func (g *generator) keepOrGenerate(name string, kind session.Kind, alg session.Algorithm) (crypto.Signer, []byte, error) {
	if p, ok := g.prev[name]; ok && p.Kind == kind && p.Algorithm == alg && len(p.KeyPEM) > 0 {
		key, err := ca.ParseKeyPEM(p.KeyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("cas: stored key of secret %q: %w", name, err)
		}
		return key, p.KeyPEM, nil
	}
	caAlg, err := ca.ParseAlgorithm(string(alg))
	if err != nil {
		return nil, nil, fmt.Errorf("cas: secret %q: %w", name, err)
	}
	if err := g.ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("cas: secret %q: %w", name, err)
	}
	if g.slots != nil && (caAlg == ca.RSA2048 || caAlg == ca.RSA3072) {
		// An RSA key costs up to a second of CPU: only a few are made at once, whoever asks,
		// so that requests for them cannot take every core.
		select {
		case g.slots <- struct{}{}:
			defer func() { <-g.slots }()
		case <-g.ctx.Done():
			return nil, nil, fmt.Errorf("cas: secret %q: waiting to generate its RSA key: %w", name, g.ctx.Err())
		}
	}
	key, err := ca.GenerateKey(caAlg)
	if err != nil {
		return nil, nil, fmt.Errorf("cas: secret %q: %w", name, err)
	}
	keyPEM, err := ca.MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("cas: secret %q: %w", name, err)
	}
	if kind == session.KindPrivateKey {
		g.changed = append(g.changed, name)
	}
	return key, keyPEM, nil
}

// certificate issues an x509 or x509-ca secret (and, first, its issuer). visiting guards
// against issuer cycles, which Validate already refuses.
func (g *generator) certificate(def *session.Secret, visiting []string) error {
	if _, ok := g.certs[def.Name]; ok {
		return nil
	}
	if slices.Contains(visiting, def.Name) {
		return errorf(CodeInvalid, nil, "secret %q: issuer cycle %v", def.Name, append(visiting, def.Name))
	}
	var (
		key    crypto.Signer
		keyPEM []byte
		alg    session.Algorithm
		err    error
	)
	if def.PrivateKey != "" {
		kdef, ok := g.s.Secret(def.PrivateKey)
		if !ok || kdef.Import != nil {
			return errorf(CodeInvalid, nil, "secret %q: private_key %q must be a private-key generated in this session", def.Name, def.PrivateKey)
		}
		if key, err = g.privateKey(kdef); err != nil {
			return err
		}
		keyPEM, alg = g.out[kdef.Name].KeyPEM, kdef.EffectiveAlgorithm()
	} else {
		alg = session.AlgorithmP256
		if key, keyPEM, err = g.keepOrGenerate(def.Name, def.Kind, alg); err != nil {
			return err
		}
	}

	var issuer *x509.Certificate
	issuerKey := key
	var issuerChain []byte
	if def.Issuer != "" {
		idef, ok := g.s.Secret(def.Issuer)
		if !ok || idef.Import != nil || idef.Kind != session.KindX509CA {
			return errorf(CodeInvalid, nil, "secret %q: issuer %q must be an x509-ca generated in this session", def.Name, def.Issuer)
		}
		if err := g.certificate(idef, append(visiting, def.Name)); err != nil {
			return err
		}
		issuer, issuerKey = g.certs[idef.Name], g.certKey(idef)
		issuerChain = g.out[idef.Name].ChainPEM
	}
	validFor, err := def.Validity()
	if err != nil {
		return errorf(CodeInvalid, err, "secret %q", def.Name)
	}
	cn := def.CommonName
	if cn == "" {
		cn = def.Name
	}
	var cert *x509.Certificate
	if def.Kind == session.KindX509CA {
		cert, err = ca.IssueCA(ca.CARequest{
			PublicKey: key.Public(), Issuer: issuer, IssuerKey: issuerKey, CommonName: cn,
			ValidFor: validFor, MaxPathLen: -1, Now: g.now, Rand: g.rand,
		})
	} else {
		cert, err = ca.IssueLeaf(ca.LeafRequest{
			PublicKey: key.Public(), Issuer: issuer, IssuerKey: issuerKey, CommonName: cn,
			DNSNames: def.DNS, ValidFor: validFor, Now: g.now, Rand: g.rand,
		})
	}
	if err != nil {
		return fmt.Errorf("cas: secret %q: %w", def.Name, err)
	}
	certPEM := ca.MarshalCertsPEM(cert)
	chain := slices.Concat(certPEM, issuerChain)
	g.certs[def.Name] = cert
	g.keys[def.Name] = key
	g.out[def.Name] = storedSecret{
		Kind: def.Kind, Algorithm: alg, KeyPEM: keyPEM, CertPEM: certPEM, ChainPEM: chain, KeyRef: def.PrivateKey,
	}
	g.changed = append(g.changed, def.Name)
	return nil
}

func (g *generator) certKey(def *session.Secret) crypto.Signer {
	if def.PrivateKey != "" {
		return g.keys[def.PrivateKey]
	}
	return g.keys[def.Name]
}

// parseCertPEM parses the single certificate of an access policy entry.
func parseCertPEM(s string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
