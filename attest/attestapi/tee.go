package attestapi

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
)

// TEE says what kind of attestation an identity rests on. Its values are the metric label
// values of the metrics (tee="simulation").
type TEE string

// The TEEs an SVID can be issued for.
const (
	// TEESGX: a hardware Intel SGX DCAP quote.
	TEESGX TEE = "sgx"
	// TEESimulation: a quote from the simulated TEE; the SVID is visibly marked.
	TEESimulation TEE = "simulation"
	// TEEUnknown is what TEEOf reports for a certificate without the marking.
	TEEUnknown TEE = ""
)

// OIDTEE identifies the non-critical extension that records the TEE behind an SVID; its
// value is a DER UTF8String holding the TEE ("sgx" or "simulation"). The arc
// 1.3.6.1.4.1.59999 is a private enterprise arc used by attestmesh.
var OIDTEE = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 1}

// SimulatedTEEUnit is the Subject organizational unit of every SVID issued on a simulated
// attestation.
const SimulatedTEEUnit = "attestmesh-simulated-tee"

// TEEExtension returns the certificate extension that records tee (OIDTEE).
func TEEExtension(tee TEE) (pkix.Extension, error) {
	val, err := asn1.MarshalWithParams(string(tee), "utf8")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("attestapi: encode TEE extension: %w", err)
	}
	return pkix.Extension{Id: OIDTEE, Critical: false, Value: val}, nil
}

// TEEOf reports the TEE an SVID was issued for: TEESimulation when either the OIDTEE
// extension says "simulation" or the Subject carries SimulatedTEEUnit, TEESGX when the
// extension says "sgx", TEEUnknown otherwise. It reads the marking only: verify the
// certificate first.
func TEEOf(cert *x509.Certificate) TEE {
	if cert == nil {
		return TEEUnknown
	}
	if slices.Contains(cert.Subject.OrganizationalUnit, SimulatedTEEUnit) {
		return TEESimulation
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(OIDTEE) {
			continue
		}
		var s string
		rest, err := asn1.UnmarshalWithParams(ext.Value, &s, "utf8")
		if err != nil || len(rest) != 0 {
			return TEEUnknown
		}
		switch TEE(s) {
		case TEESimulation:
			return TEESimulation
		case TEESGX:
			return TEESGX
		}
		return TEEUnknown
	}
	return TEEUnknown
}
