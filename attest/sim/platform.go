package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

var tcbStatuses = []string{
	dcap.TCBUpToDate, dcap.TCBSWHardeningNeeded, dcap.TCBConfigurationNeeded, dcap.TCBConfigurationAndSWHardeningNeeded,
	dcap.TCBOutOfDate, dcap.TCBOutOfDateConfigurationNeeded, dcap.TCBRevoked,
}

// Defaults of a simulated platform. The TCB components and PCESVN are those of a real
// platform (FMSPC 00606A000000) so that the simulated PCK certificate looks like Intel's.
var (
	DefaultFMSPC  = [6]byte{0x00, 0x51, 0x4d, 0x00, 0x00, 0x00}
	DefaultCPUSVN = [16]byte{7, 9, 3, 3, 255, 255, 1}
)

// DefaultPCESVN is the default PCE security version of a simulated platform.
const DefaultPCESVN = 13

// Validity of the simulated certificates, from their creation.
const (
	rootValidity = 20 * 365 * 24 * time.Hour
	pckValidity  = 7 * 365 * 24 * time.Hour
	clockSkew    = time.Hour
)

// PlatformOptions configure NewPlatform. The zero value is an up-to-date platform with
// DefaultFMSPC, DefaultCPUSVN and DefaultPCESVN.
type PlatformOptions struct {
	// FMSPC, CPUSVN and PCESVN go into the PCK certificate's SGX extension; zero values mean
	// the defaults.
	FMSPC  [6]byte
	CPUSVN [16]byte
	PCESVN uint16
	// TCBStatus is the status that the platform's TCB level has in the simulated TCB Info
	// ("" means UpToDate). AdvisoryIDs go with it (e.g. "INTEL-SA-00615"). Use them to test
	// the tolerate rules of a policy.
	TCBStatus   string
	AdvisoryIDs []string
	// SMTEnabled sets the SMTEnabled (hyperthreading) flag of the PCK configuration.
	SMTEnabled bool
	// RevokedPCK makes the PCK CA's CRL list the platform's own PCK certificate, as Intel's
	// does for a platform whose key leaked: to test that revocation is checked.
	RevokedPCK bool
	// Now is the creation time of the certificates; zero means time.Now().
	Now time.Time
}

// Platform is a simulated SGX platform: its certificate hierarchy and the CRLs of its two CAs,
// its PCK key, its TCB signing key and its quoting enclave's attestation key. The root and
// intermediate CA keys are discarded once the certificates and CRLs are issued (the CRLs are
// valid as long as the CAs). A Platform is immutable and safe for concurrent use.
type Platform struct {
	root, pckCA, pck, tcbSigning *x509.Certificate
	rootCRL, pckCRL              []byte // DER; nil for a platform saved before CRLs existed
	pckKey, tcbKey, attKey       *ecdsa.PrivateKey
	ext                          *pckExtension
	tcbStatus                    string
	advisoryIDs                  []string

	// qeSig is the PCK key's signature over the QE report, made once: as on a real platform,
	// where the PCE certifies the attestation key once and every quote carries the same
	// signature (so a verifier checks it once).
	qeSigOnce sync.Once
	qeSig     [dcap.ECDSASigSize]byte
	qeSigErr  error

	// pckChain is the certification data every quote carries, PEM, encoded once.
	pckChainOnce sync.Once
	pckChain     []byte
}

// NewPlatform creates a simulated platform with a fresh root CA. rand supplies serial
// numbers and identifiers (nil means crypto/rand); key generation always uses crypto/rand.
func NewPlatform(rand io.Reader, opts PlatformOptions) (*Platform, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	status := opts.TCBStatus
	if status == "" {
		status = dcap.TCBUpToDate
	}
	if !slices.Contains(tcbStatuses, status) {
		return nil, fmt.Errorf("sim: unknown TCB status %q, want one of %v", status, tcbStatuses)
	}
	ext := &pckExtension{FMSPC: opts.FMSPC, CPUSVN: opts.CPUSVN, PCESVN: opts.PCESVN, SMTEnabled: opts.SMTEnabled}
	if ext.FMSPC == ([6]byte{}) {
		ext.FMSPC = DefaultFMSPC
	}
	if ext.CPUSVN == ([16]byte{}) {
		ext.CPUSVN = DefaultCPUSVN
	}
	if ext.PCESVN == 0 {
		ext.PCESVN = DefaultPCESVN
	}
	if _, err := io.ReadFull(rand, ext.PPID[:]); err != nil {
		return nil, fmt.Errorf("sim: PPID: %w", err)
	}
	if _, err := io.ReadFull(rand, ext.PlatformInstanceID[:]); err != nil {
		return nil, fmt.Errorf("sim: platform instance ID: %w", err)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Second)

	keys := make([]*ecdsa.PrivateKey, 5)
	for i := range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
		if err != nil {
			return nil, fmt.Errorf("sim: generate key: %w", err)
		}
		keys[i] = k
	}
	rootKey, caKey := keys[0], keys[1]
	p := &Platform{pckKey: keys[2], tcbKey: keys[3], attKey: keys[4], ext: ext, tcbStatus: status,
		advisoryIDs: slices.Clone(opts.AdvisoryIDs)}

	extDER, err := ext.marshal()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-clockSkew)
	issue := func(cn string, tmpl *x509.Certificate, parent *x509.Certificate, pub, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
		serial, err := cryptorand.Int(rand, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, fmt.Errorf("sim: serial for %s: %w", cn, err)
		}
		tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
		tmpl.Subject = pkix.Name{
			CommonName:   cn,
			Organization: []string{"attestmesh SIMULATION (no security)"},
		}
		tmpl.NotBefore = notBefore
		tmpl.BasicConstraintsValid = true
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, parent, &pub.PublicKey, signer)
		if err != nil {
			return nil, fmt.Errorf("sim: issue %s: %w", cn, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("sim: parse %s: %w", cn, err)
		}
		return c, nil
	}
	if p.root, err = issue("attestmesh simulated SGX Root CA", &x509.Certificate{
		NotAfter: now.Add(rootValidity), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, rootKey, rootKey); err != nil {
		return nil, err
	}
	if p.pckCA, err = issue("attestmesh simulated SGX PCK Platform CA", &x509.Certificate{
		NotAfter: now.Add(rootValidity), IsCA: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, p.root, caKey, rootKey); err != nil {
		return nil, err
	}
	if p.pck, err = issue("attestmesh simulated SGX PCK Certificate", &x509.Certificate{
		NotAfter:        now.Add(pckValidity),
		KeyUsage:        x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtraExtensions: []pkix.Extension{{Id: OIDSGXExtensions, Value: extDER}},
	}, p.pckCA, p.pckKey, caKey); err != nil {
		return nil, err
	}
	if p.tcbSigning, err = issue("attestmesh simulated SGX TCB Signing", &x509.Certificate{
		NotAfter: now.Add(pckValidity),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	}, p.root, p.tcbKey, rootKey); err != nil {
		return nil, err
	}
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked ...*x509.Certificate) ([]byte, error) {
		tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: notBefore, NextUpdate: now.Add(rootValidity)}
		for _, c := range revoked {
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: notBefore})
		}
		der, err := x509.CreateRevocationList(cryptorand.Reader, tmpl, issuer, key)
		if err != nil {
			return nil, fmt.Errorf("sim: CRL of %s: %w", issuer.Subject.CommonName, err)
		}
		return der, nil
	}
	if p.rootCRL, err = crl(p.root, rootKey); err != nil {
		return nil, err
	}
	var revoked []*x509.Certificate
	if opts.RevokedPCK {
		revoked = append(revoked, p.pck)
	}
	if p.pckCRL, err = crl(p.pckCA, caKey, revoked...); err != nil {
		return nil, err
	}
	return p, nil
}

// HasCRLs reports whether the platform has its CAs' CRLs (a platform saved by a version from
// before CRLs has none, and its quotes can only be verified without revocation).
func (p *Platform) HasCRLs() bool { return p.rootCRL != nil && p.pckCRL != nil }

// Root returns the platform's simulated root CA, the certificate a verifier pins to accept
// this platform's quotes.
func (p *Platform) Root() *x509.Certificate { return p.root }

// FMSPC returns the platform's FMSPC as in its PCK certificate.
func (p *Platform) FMSPC() [6]byte { return p.ext.FMSPC }

// TCBStatus returns the status of the platform's TCB level in its TCB Info, and its advisories.
func (p *Platform) TCBStatus() (string, []string) { return p.tcbStatus, slices.Clone(p.advisoryIDs) }

// PEM block types and roles of a marshalled Platform.
const (
	pemCertificate = "CERTIFICATE"
	pemCRL         = "X509 CRL"
	pemPrivateKey  = "PRIVATE KEY"
	pemParams      = "ATTESTMESH SIM PLATFORM"
	pemRoleHeader  = "Role"

	roleRoot        = "root"
	rolePCKCA       = "pck-platform-ca"
	rolePCK         = "pck"
	roleTCBSigning  = "tcb-signing"
	roleAttestation = "attestation"
	roleRootCRL     = "root-crl"
	rolePCKCRL      = "pck-crl"

	paramsVersion = 1
)

// maxPlatformSize bounds UnmarshalPlatform's input.
const maxPlatformSize = 64 << 10

type platformParams struct {
	Version     int      `json:"version"`
	TCBStatus   string   `json:"tcb_status"`
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
}

// Marshal encodes the platform as a PEM bundle: its four certificates, its three private
// keys (PKCS #8) and its parameters, each block tagged with a Role header. The bundle holds
// private keys: the caller must store it encrypted.
func (p *Platform) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	for _, c := range []struct {
		role string
		cert *x509.Certificate
	}{{roleRoot, p.root}, {rolePCKCA, p.pckCA}, {rolePCK, p.pck}, {roleTCBSigning, p.tcbSigning}} {
		if err := pem.Encode(&buf, &pem.Block{Type: pemCertificate, Headers: map[string]string{pemRoleHeader: c.role}, Bytes: c.cert.Raw}); err != nil {
			return nil, fmt.Errorf("sim: encode %s certificate: %w", c.role, err)
		}
	}
	for _, c := range []struct {
		role string
		der  []byte
	}{{roleRootCRL, p.rootCRL}, {rolePCKCRL, p.pckCRL}} {
		if c.der == nil {
			continue
		}
		if err := pem.Encode(&buf, &pem.Block{Type: pemCRL, Headers: map[string]string{pemRoleHeader: c.role}, Bytes: c.der}); err != nil {
			return nil, fmt.Errorf("sim: encode %s: %w", c.role, err)
		}
	}
	for _, k := range []struct {
		role string
		key  *ecdsa.PrivateKey
	}{{rolePCK, p.pckKey}, {roleTCBSigning, p.tcbKey}, {roleAttestation, p.attKey}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return nil, fmt.Errorf("sim: encode %s key: %w", k.role, err)
		}
		if err := pem.Encode(&buf, &pem.Block{Type: pemPrivateKey, Headers: map[string]string{pemRoleHeader: k.role}, Bytes: der}); err != nil {
			return nil, fmt.Errorf("sim: encode %s key: %w", k.role, err)
		}
	}
	params, err := json.Marshal(platformParams{Version: paramsVersion, TCBStatus: p.tcbStatus, AdvisoryIDs: p.advisoryIDs})
	if err != nil {
		return nil, fmt.Errorf("sim: encode parameters: %w", err)
	}
	if err := pem.Encode(&buf, &pem.Block{Type: pemParams, Bytes: params}); err != nil {
		return nil, fmt.Errorf("sim: encode parameters: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalPlatform decodes what Marshal produced. It checks that every certificate and key
// is present exactly once, that the certificates chain to the root, that each private key
// belongs to its certificate and that the PCK certificate carries a valid SGX extension.
func UnmarshalPlatform(data []byte) (*Platform, error) {
	if len(data) > maxPlatformSize {
		return nil, fmt.Errorf("sim: platform bundle is %d bytes, more than %d", len(data), maxPlatformSize)
	}
	certs := map[string]*x509.Certificate{}
	keys := map[string]*ecdsa.PrivateKey{}
	crls := map[string]*x509.RevocationList{}
	var params *platformParams
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		role := b.Headers[pemRoleHeader]
		switch b.Type {
		case pemCertificate:
			if certs[role] != nil {
				return nil, fmt.Errorf("sim: platform bundle: duplicate %q certificate", role)
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("sim: platform bundle: %q certificate: %w", role, err)
			}
			certs[role] = c
		case pemCRL:
			if role != roleRootCRL && role != rolePCKCRL {
				return nil, fmt.Errorf("sim: platform bundle: unexpected CRL role %q", role)
			}
			if crls[role] != nil {
				return nil, fmt.Errorf("sim: platform bundle: duplicate %q", role)
			}
			crl, err := x509.ParseRevocationList(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("sim: platform bundle: %q: %w", role, err)
			}
			crls[role] = crl
		case pemPrivateKey:
			if keys[role] != nil {
				return nil, fmt.Errorf("sim: platform bundle: duplicate %q key", role)
			}
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("sim: platform bundle: %q key: %w", role, err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok || ek.Curve != elliptic.P256() {
				return nil, fmt.Errorf("sim: platform bundle: %q key is not ECDSA P-256", role)
			}
			keys[role] = ek
		case pemParams:
			if params != nil {
				return nil, errors.New("sim: platform bundle: duplicate parameters")
			}
			dec := json.NewDecoder(bytes.NewReader(b.Bytes))
			dec.DisallowUnknownFields()
			params = &platformParams{}
			if err := dec.Decode(params); err != nil {
				return nil, fmt.Errorf("sim: platform bundle: parameters: %w", err)
			}
		default:
			return nil, fmt.Errorf("sim: platform bundle: unexpected PEM block %q", b.Type)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("sim: platform bundle: trailing data after the last PEM block")
	}
	if params == nil {
		return nil, errors.New("sim: platform bundle: parameters missing")
	}
	if params.Version != paramsVersion {
		return nil, fmt.Errorf("sim: platform bundle: parameters version %d, want %d", params.Version, paramsVersion)
	}
	if !slices.Contains(tcbStatuses, params.TCBStatus) {
		return nil, fmt.Errorf("sim: platform bundle: unknown TCB status %q", params.TCBStatus)
	}
	for _, role := range []string{roleRoot, rolePCKCA, rolePCK, roleTCBSigning} {
		if certs[role] == nil {
			return nil, fmt.Errorf("sim: platform bundle: %q certificate missing", role)
		}
	}
	for _, role := range []string{rolePCK, roleTCBSigning, roleAttestation} {
		if keys[role] == nil {
			return nil, fmt.Errorf("sim: platform bundle: %q key missing", role)
		}
	}
	if len(certs) != 4 || len(keys) != 3 {
		return nil, errors.New("sim: platform bundle: unexpected certificate or key roles")
	}
	if (crls[roleRootCRL] == nil) != (crls[rolePCKCRL] == nil) {
		return nil, errors.New("sim: platform bundle: one CRL without the other")
	}
	p := &Platform{
		root: certs[roleRoot], pckCA: certs[rolePCKCA], pck: certs[rolePCK], tcbSigning: certs[roleTCBSigning],
		pckKey: keys[rolePCK], tcbKey: keys[roleTCBSigning], attKey: keys[roleAttestation],
		tcbStatus: params.TCBStatus, advisoryIDs: params.AdvisoryIDs,
	}
	for _, link := range []struct {
		name          string
		child, parent *x509.Certificate
	}{
		{roleRoot, p.root, p.root}, {rolePCKCA, p.pckCA, p.root}, {rolePCK, p.pck, p.pckCA}, {roleTCBSigning, p.tcbSigning, p.root},
	} {
		if err := link.child.CheckSignatureFrom(link.parent); err != nil {
			return nil, fmt.Errorf("sim: platform bundle: %q certificate not signed by its issuer: %w", link.name, err)
		}
	}
	if crls[roleRootCRL] != nil {
		for _, c := range []struct {
			role   string
			crl    *x509.RevocationList
			issuer *x509.Certificate
		}{{roleRootCRL, crls[roleRootCRL], p.root}, {rolePCKCRL, crls[rolePCKCRL], p.pckCA}} {
			if err := c.crl.CheckSignatureFrom(c.issuer); err != nil {
				return nil, fmt.Errorf("sim: platform bundle: %q not signed by its CA: %w", c.role, err)
			}
		}
		p.rootCRL, p.pckCRL = crls[roleRootCRL].Raw, crls[rolePCKCRL].Raw
	}
	for _, pair := range []struct {
		name string
		cert *x509.Certificate
		key  *ecdsa.PrivateKey
	}{{rolePCK, p.pck, p.pckKey}, {roleTCBSigning, p.tcbSigning, p.tcbKey}} {
		if !pair.key.PublicKey.Equal(pair.cert.PublicKey) {
			return nil, fmt.Errorf("sim: platform bundle: %q key does not match its certificate", pair.name)
		}
	}
	for _, e := range p.pck.Extensions {
		if e.Id.Equal(OIDSGXExtensions) {
			ext, err := parsePCKExtension(e.Value)
			if err != nil {
				return nil, fmt.Errorf("sim: platform bundle: PCK certificate: %w", err)
			}
			p.ext = ext
		}
	}
	if p.ext == nil {
		return nil, errors.New("sim: platform bundle: PCK certificate has no SGX extension")
	}
	return p, nil
}
