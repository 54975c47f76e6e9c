package attestation

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

// An app is the enclave identity of an attested app, as far as a session's service judges it
// (CheckService): its MRENCLAVE, MRSIGNER, ISVPRODID and ISVSVN. A sidecar speaks for one: the
// grant its app's launcher hands over carries it, and so does every SVID the sidecar gets, so
// that each renewal asks the session again whether that app is still accepted. Revoking an
// app's measurement thus ends its sidecar's identity at the next renewal, not never.
type app struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ISVProdID uint16
	ISVSVN    uint16
}

// appSize is the size of an app's binary form: MRENCLAVE || MRSIGNER || ISVPRODID || ISVSVN
// (big-endian).
const appSize = 32 + 32 + 2 + 2

// oidApp identifies the non-critical extension of a sidecar SVID that records the app it speaks
// for: a DER OCTET STRING holding the app's binary form. Only the control plane reads it.
var oidApp = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 2}

func appOf(id *dcap.Identity) app {
	var a app
	copy(a.MREnclave[:], id.MREnclave)
	copy(a.MRSigner[:], id.MRSigner)
	a.ISVProdID, a.ISVSVN = id.ISVProdID, id.ISVSVN
	return a
}

func (a app) marshal() []byte {
	b := make([]byte, 0, appSize)
	b = append(b, a.MREnclave[:]...)
	b = append(b, a.MRSigner[:]...)
	b = binary.BigEndian.AppendUint16(b, a.ISVProdID)
	return binary.BigEndian.AppendUint16(b, a.ISVSVN)
}

func unmarshalApp(b []byte) (app, bool) {
	var a app
	if len(b) != appSize {
		return a, false
	}
	copy(a.MREnclave[:], b[:32])
	copy(a.MRSigner[:], b[32:64])
	a.ISVProdID = binary.BigEndian.Uint16(b[64:])
	a.ISVSVN = binary.BigEndian.Uint16(b[66:])
	return a, true
}

// identity is the app as an enclave identity for CheckService.
func (a app) identity() *dcap.Identity {
	return &dcap.Identity{MREnclave: a.MREnclave[:], MRSigner: a.MRSigner[:], ISVProdID: a.ISVProdID, ISVSVN: a.ISVSVN}
}

func (a app) extension() (pkix.Extension, error) {
	val, err := asn1.Marshal(a.marshal())
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("attestation: encode app extension: %w", err)
	}
	return pkix.Extension{Id: oidApp, Value: val}, nil
}

// appOfSVID reads the app a sidecar SVID speaks for; false when it records none (an app's own
// SVID, or one issued before SVIDs recorded it).
func appOfSVID(cert *x509.Certificate) (app, bool) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidApp) {
			continue
		}
		var b []byte
		if rest, err := asn1.Unmarshal(ext.Value, &b); err != nil || len(rest) != 0 {
			return app{}, false
		}
		return unmarshalApp(b)
	}
	return app{}, false
}
