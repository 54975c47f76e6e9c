package dcap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pki is a root, a PCK CA, a PCK certificate and a TCB signing certificate, for the CRL rules
// (the public vectors come without Intel's CRLs).
type pki struct {
	root, pckCA, pck, tcb *x509.Certificate
	rootKey, caKey        *ecdsa.PrivateKey
}

func newPKI(tb testing.TB) *pki {
	tb.Helper()
	p := &pki{}
	p.root, p.rootKey = newTestCA(tb)
	issue := func(serial int64, cn string, ca bool, parent *x509.Certificate, signer *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(tb, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<33, 0), IsCA: ca, BasicConstraintsValid: true,
		}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
		require.NoError(tb, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(tb, err)
		return c, key
	}
	p.pckCA, p.caKey = issue(2, "PCK CA", true, p.root, p.rootKey)
	p.pck, _ = issue(3, "PCK Certificate", false, p.pckCA, p.caKey)
	p.tcb, _ = issue(4, "TCB Signing", false, p.root, p.rootKey)
	return p
}

func crl(tb testing.TB, issuer *x509.Certificate, key *ecdsa.PrivateKey, this, next time.Time, revoked ...*x509.Certificate) []byte {
	tb.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	require.NoError(tb, err)
	return der
}

func TestCheckRevocation(t *testing.T) {
	p := newPKI(t)
	now := time.Unix(1_700_000_000, 0)
	this, next := now.Add(-time.Hour), now.Add(30*24*time.Hour)
	good := func() Collateral {
		return Collateral{RootCACRL: crl(t, p.root, p.rootKey, this, next), PCKCRL: crl(t, p.pckCA, p.caKey, this, next)}
	}
	chain := []*x509.Certificate{p.pck, p.pckCA, p.root}
	tests := []struct {
		name   string
		edit   func(c *Collateral)
		reason Reason
		msg    string
	}{
		{name: "nothing revoked", edit: func(*Collateral) {}},
		{name: "PEM CRLs", edit: func(c *Collateral) {
			c.RootCACRL = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.RootCACRL})
			c.PCKCRL = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.PCKCRL})
		}},
		{name: "PCK certificate revoked", edit: func(c *Collateral) { c.PCKCRL = crl(t, p.pckCA, p.caKey, this, next, p.pck) },
			reason: ReasonCertRevoked, msg: `dcap: PCK certificate chain: PCK certificate "CN=PCK Certificate" (serial 3) is revoked by the PCK CA CRL since 2023-11-14T21:13:20Z`},
		{name: "PCK CA revoked", edit: func(c *Collateral) { c.RootCACRL = crl(t, p.root, p.rootKey, this, next, p.pckCA) },
			reason: ReasonCertRevoked, msg: `PCK certificate chain: PCK intermediate CA certificate "CN=PCK CA" (serial 2) is revoked by the root CA CRL`},
		{name: "TCB signing certificate revoked", edit: func(c *Collateral) { c.RootCACRL = crl(t, p.root, p.rootKey, this, next, p.tcb) },
			reason: ReasonCertRevoked, msg: `TCB signing certificate "CN=TCB Signing" (serial 4) is revoked by the root CA CRL`},
		{name: "PCK CRL missing", edit: func(c *Collateral) { c.PCKCRL = nil }, reason: ReasonCRL, msg: "PCK CA CRL: not present"},
		{name: "root CRL missing", edit: func(c *Collateral) { c.RootCACRL = nil }, reason: ReasonCRL, msg: "root CA CRL: not present"},
		{name: "PCK CRL signed by the root instead", edit: func(c *Collateral) { c.PCKCRL = crl(t, p.root, p.rootKey, this, next) },
			reason: ReasonCRL, msg: `PCK CA CRL: not signed by "CN=PCK CA"`},
		{name: "root CRL out of date", edit: func(c *Collateral) { c.RootCACRL = crl(t, p.root, p.rootKey, this.Add(-60*day), now) },
			reason: ReasonCRL, msg: "root CA CRL: out of date: nextUpdate was 2023-11-14T22:13:20Z"},
		{name: "CRL from the future", edit: func(c *Collateral) { c.PCKCRL = crl(t, p.pckCA, p.caKey, now.Add(time.Hour), next) },
			reason: ReasonCRL, msg: "PCK CA CRL: thisUpdate 2023-11-14T23:13:20Z is in the future"},
		{name: "not a CRL", edit: func(c *Collateral) { c.RootCACRL = []byte("garbage") }, reason: ReasonCRL, msg: "root CA CRL: x509:"},
		{name: "a certificate in place of a CRL", edit: func(c *Collateral) {
			c.PCKCRL = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.pck.Raw})
		}, reason: ReasonCRL, msg: `PCK CA CRL: PEM type "CERTIFICATE", want X509 CRL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.edit(&c)
			err := checkRevocation(c, chain, p.tcb, p.root, now)
			if tt.reason == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.reason, ReasonOf(err), err.Error())
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// FuzzCheckRevocation feeds arbitrary CRL bytes to the revocation check: it must never panic
// and never accept a CRL that its CA did not sign.
func FuzzCheckRevocation(f *testing.F) {
	p := newPKI(f)
	now := time.Unix(1_700_000_000, 0)
	good := crl(f, p.pckCA, p.caKey, now.Add(-time.Hour), now.Add(time.Hour))
	root := crl(f, p.root, p.rootKey, now.Add(-time.Hour), now.Add(time.Hour))
	f.Add(good)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: good}))
	f.Add([]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"))
	chain := []*x509.Certificate{p.pck, p.pckCA, p.root}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkRevocation(Collateral{PCKCRL: b, RootCACRL: root}, chain, p.tcb, p.root, now)
		if err == nil {
			crl, perr := parseCRL("fuzzed", b)
			if perr != nil || crl.CheckSignatureFrom(p.pckCA) != nil {
				t.Fatalf("accepted a CRL that does not parse or is not signed by the PCK CA: %v %v", perr, crl)
			}
		}
	})
}
