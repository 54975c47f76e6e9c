package dcap

import (
	"encoding/binary"
	"math"
)

// Sizes of the fixed parts of a version 3 quote (Intel SGX ECDSA Quote Library API, A.4).
const (
	HeaderSize     = 48
	ReportBodySize = 384
	ECDSASigSize   = 64 // r || s, 32 bytes each, big-endian
	ECDSAKeySize   = 64 // x || y, 32 bytes each, big-endian

	QuoteVersion3        = 3
	AttestationKeyP256   = 2
	CertDataPCKChain     = 5 // PEM PCK leaf || intermediate || root
	CertDataEncryptedPPI = 2

	// Offsets inside the report body.
	offCPUSVN     = 0
	offMiscSelect = 16
	offAttributes = 48
	offMREnclave  = 64
	offMRSigner   = 128
	offISVProdID  = 256
	offISVSVN     = 258
	offReportData = 320

	// AttributeDebug is the DEBUG bit in the low byte of ATTRIBUTES.flags.
	AttributeDebug = 0x02
)

// Header is the 48-byte quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	TEEType            uint32 // reserved (0) in v3
	QESVN              uint16
	PCESVN             uint16
	QEVendorID         [16]byte
	UserData           [20]byte
}

// ReportBody is an SGX report body (REPORTBODY), used for the ISV enclave and the QE.
type ReportBody struct {
	CPUSVN     [16]byte
	MiscSelect uint32
	Attributes [16]byte // flags (u64 LE) || xfrm (u64 LE)
	MREnclave  [32]byte
	MRSigner   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData [64]byte
}

// Debug reports whether the enclave's DEBUG attribute is set.
func (r *ReportBody) Debug() bool { return r.Attributes[0]&AttributeDebug != 0 }

// CertificationData is the tail of the signature data.
type CertificationData struct {
	Type uint16
	Data []byte
}

// SignatureData is the ECDSA-P256 quote signature data.
type SignatureData struct {
	ISVSignature      [ECDSASigSize]byte // over SHA-256(header || ISV report body)
	AttestationKey    [ECDSAKeySize]byte
	QEReport          ReportBody
	QEReportSignature [ECDSASigSize]byte // by the PCK key over SHA-256(QE report body)
	QEAuthData        []byte
	Certification     CertificationData
}

// Quote is a parsed version 3 quote.
type Quote struct {
	Header    Header
	Body      ReportBody
	Signature SignatureData
}

// Marshal encodes the header in its 48-byte wire form.
func (h *Header) Marshal() []byte { return h.appendTo(nil) }

// appendTo appends the header's wire form to out.
func (h *Header) appendTo(out []byte) []byte {
	out = append(out, make([]byte, HeaderSize)...)
	b := out[len(out)-HeaderSize:]
	binary.LittleEndian.PutUint16(b[0:], h.Version)
	binary.LittleEndian.PutUint16(b[2:], h.AttestationKeyType)
	binary.LittleEndian.PutUint32(b[4:], h.TEEType)
	binary.LittleEndian.PutUint16(b[8:], h.QESVN)
	binary.LittleEndian.PutUint16(b[10:], h.PCESVN)
	copy(b[12:28], h.QEVendorID[:])
	copy(b[28:48], h.UserData[:])
	return out
}

// Marshal encodes the report body in its 384-byte wire form (reserved fields zero).
func (r *ReportBody) Marshal() []byte { return r.appendTo(nil) }

// appendTo appends the report body's wire form to out.
func (r *ReportBody) appendTo(out []byte) []byte {
	out = append(out, make([]byte, ReportBodySize)...)
	b := out[len(out)-ReportBodySize:]
	copy(b[offCPUSVN:], r.CPUSVN[:])
	binary.LittleEndian.PutUint32(b[offMiscSelect:], r.MiscSelect)
	copy(b[offAttributes:], r.Attributes[:])
	copy(b[offMREnclave:], r.MREnclave[:])
	copy(b[offMRSigner:], r.MRSigner[:])
	binary.LittleEndian.PutUint16(b[offISVProdID:], r.ISVProdID)
	binary.LittleEndian.PutUint16(b[offISVSVN:], r.ISVSVN)
	copy(b[offReportData:], r.ReportData[:])
	return out
}

// Marshal encodes the whole quote. Signatures are taken as they are in q; a signer fills
// them in over the bytes that Marshal produces for the signed regions. A length that does not
// fit its field is written as the field's maximum and no longer matches the data, so callers
// keep QE authentication data under 65536 bytes.
func (q *Quote) Marshal() []byte {
	s := &q.Signature
	sigLen := ECDSASigSize + ECDSAKeySize + ReportBodySize + ECDSASigSize + 2 + len(s.QEAuthData) + 6 + len(s.Certification.Data)
	out := make([]byte, 0, HeaderSize+ReportBodySize+4+sigLen)
	out = q.Header.appendTo(out)
	out = q.Body.appendTo(out)
	out = binary.LittleEndian.AppendUint32(out, fieldLen32(sigLen))
	out = append(out, s.ISVSignature[:]...)
	out = append(out, s.AttestationKey[:]...)
	out = s.QEReport.appendTo(out)
	out = append(out, s.QEReportSignature[:]...)
	out = binary.LittleEndian.AppendUint16(out, fieldLen16(len(s.QEAuthData)))
	out = append(out, s.QEAuthData...)
	out = binary.LittleEndian.AppendUint16(out, s.Certification.Type)
	out = binary.LittleEndian.AppendUint32(out, fieldLen32(len(s.Certification.Data)))
	return append(out, s.Certification.Data...)
}

// fieldLen16 and fieldLen32 encode a length, saturating at the field's maximum.
func fieldLen16(n int) uint16 {
	if n < 0 || n > math.MaxUint16 {
		return math.MaxUint16
	}
	return uint16(n)
}

func fieldLen32(n int) uint32 {
	if n < 0 || int64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}
