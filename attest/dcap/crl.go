package dcap

import (
	"crypto/x509"
	"encoding/pem"
	"time"
)

// parseCRL parses a CRL given in DER or PEM ("X509 CRL").
func parseCRL(what string, b []byte) (*x509.RevocationList, error) {
	if len(trimPEMSpace(b)) == 0 {
		return nil, fail(ReasonCRL, "%s: not present in the collateral (revocation cannot be checked)", what)
	}
	der := b
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fail(ReasonCRL, "%s: PEM type %q, want X509 CRL", what, block.Type)
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fail(ReasonCRL, "%s: %v", what, err)
	}
	return crl, nil
}

// checkCRL checks that crl was issued and signed by issuer and is current at now: issued
// (thisUpdate) before now, and now before its nextUpdate. (Options.CollateralMaxAge is for TCB
// Info and QE Identity: a CRL is current until the CA says it publishes the next.)
func checkCRL(what string, crl *x509.RevocationList, issuer *x509.Certificate, now time.Time) error {
	if err := checkCRLSignatureCached(crl, issuer); err != nil {
		return fail(ReasonCRL, "%s: not signed by %q: %v", what, issuer.Subject, err)
	}
	if now.Before(crl.ThisUpdate) {
		return fail(ReasonCRL, "%s: thisUpdate %s is in the future (verification time %s)", what, rfc(crl.ThisUpdate), rfc(now))
	}
	switch {
	case crl.NextUpdate.IsZero():
		return fail(ReasonCRL, "%s: has no nextUpdate", what)
	case !now.Before(crl.NextUpdate):
		return fail(ReasonCRL, "%s: out of date: nextUpdate was %s (verification time %s); fetch a current one", what, rfc(crl.NextUpdate), rfc(now))
	}
	return nil
}

// revokedAt reports whether crl lists cert's serial number, and since when.
func revokedAt(crl *x509.RevocationList, cert *x509.Certificate) (time.Time, bool) {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return e.RevocationTime, true
		}
	}
	return time.Time{}, false
}

// checkRevocation is step 6a of Verify: pckChain is leaf (PCK), its CA, ..., root.
func checkRevocation(c Collateral, pckChain []*x509.Certificate, tcbSigning, root *x509.Certificate, now time.Time) error {
	rootCRL, err := parseCRLCached("root CA CRL", c.RootCACRL)
	if err != nil {
		return err
	}
	if err := checkCRL("root CA CRL", rootCRL, root, now); err != nil {
		return err
	}
	revoked := func(crlName string, crl *x509.RevocationList, role string, cert *x509.Certificate) error {
		if at, ok := revokedAt(crl, cert); ok {
			return fail(ReasonCertRevoked, "%s %q (serial %x) is revoked by the %s since %s", role, cert.Subject, cert.SerialNumber, crlName, rfc(at))
		}
		return nil
	}
	for i := 1; i < len(pckChain)-1; i++ {
		if err := revoked("root CA CRL", rootCRL, "PCK certificate chain: "+pckChainSpec.role(i), pckChain[i]); err != nil {
			return err
		}
	}
	if err := revoked("root CA CRL", rootCRL, "TCB signing certificate", tcbSigning); err != nil {
		return err
	}
	pckCA := pckChain[1]
	pckCRL, err := parseCRLCached("PCK CA CRL", c.PCKCRL)
	if err != nil {
		return err
	}
	if err := checkCRL("PCK CA CRL", pckCRL, pckCA, now); err != nil {
		return err
	}
	return revoked("PCK CA CRL", pckCRL, "PCK certificate chain: PCK certificate", pckChain[0])
}
