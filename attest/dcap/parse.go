package dcap

import (
	"encoding/binary"
)

// reader walks a byte slice with a bounds check on every read; each error names the field.
type reader struct {
	b    []byte
	off  int
	path string // e.g. "quote: signature data"
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) take(field string, n int) ([]byte, error) {
	if n > r.remaining() {
		return nil, fail(ReasonMalformed, "%s: %s: need %d bytes, only %d remain", r.path, field, n, r.remaining())
	}
	out := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return out, nil
}

func (r *reader) u16(field string) (uint16, error) {
	b, err := r.take(field, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) u32(field string) (uint32, error) {
	b, err := r.take(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// lengthPrefixed reads a length of 2 or 4 bytes and then that many bytes.
func (r *reader) lengthPrefixed(field string, width int) ([]byte, error) {
	var (
		n   uint32
		err error
	)
	if width == 2 {
		var n16 uint16
		n16, err = r.u16(field + " length")
		n = uint32(n16)
	} else {
		n, err = r.u32(field + " length")
	}
	if err != nil {
		return nil, err
	}
	if int64(n) > int64(r.remaining()) {
		return nil, fail(ReasonMalformed, "%s: %s: length %d exceeds remaining %d bytes", r.path, field, n, r.remaining())
	}
	return r.take(field, int(n))
}

// rawQuote is a parsed quote together with the exact bytes of its signed regions (the
// structs drop reserved bytes, the signatures cover them).
type rawQuote struct {
	quote      *Quote
	headerBody []byte // header || ISV report body, signed by the attestation key
	qeReport   []byte // QE report body, signed by the PCK key
}

// ParseQuote parses a version 3 ECDSA-P256 SGX quote. Every length is bounds-checked; an
// error names the field that is truncated, oversized or unsupported, and trailing bytes are
// refused. The certification data is returned as it is; Verify decides whether its type is
// usable.
func ParseQuote(b []byte) (*Quote, error) {
	rq, err := parseQuote(b)
	if err != nil {
		return nil, err
	}
	return rq.quote, nil
}

func parseQuote(b []byte) (*rawQuote, error) {
	q := &Quote{}
	r := &reader{b: b, path: "quote"}
	hdr, err := r.take("header", HeaderSize)
	if err != nil {
		return nil, err
	}
	parseHeader(&q.Header, hdr)
	if q.Header.Version != QuoteVersion3 {
		return nil, fail(ReasonUnsupported, "quote: header: version: got %d, want %d", q.Header.Version, QuoteVersion3)
	}
	if q.Header.AttestationKeyType != AttestationKeyP256 {
		return nil, fail(ReasonUnsupported, "quote: header: attestation key type: got %d, want %d (ECDSA-P256)",
			q.Header.AttestationKeyType, AttestationKeyP256)
	}
	body, err := r.take("ISV report body", ReportBodySize)
	if err != nil {
		return nil, err
	}
	parseReportBody(&q.Body, body)

	sig, err := r.lengthPrefixed("signature data", 4)
	if err != nil {
		return nil, err
	}
	if n := r.remaining(); n != 0 {
		return nil, fail(ReasonMalformed, "quote: %d trailing bytes after the signature data", n)
	}
	qeReport, err := parseSignatureData(&q.Signature, sig)
	if err != nil {
		return nil, err
	}
	return &rawQuote{quote: q, headerBody: b[:HeaderSize+ReportBodySize], qeReport: qeReport}, nil
}

func parseSignatureData(s *SignatureData, b []byte) (qeReport []byte, err error) {
	r := &reader{b: b, path: "quote: signature data"}
	fields := []struct {
		name string
		dst  []byte
	}{
		{"ISV report signature", s.ISVSignature[:]},
		{"attestation key", s.AttestationKey[:]},
	}
	for _, f := range fields {
		v, err := r.take(f.name, len(f.dst))
		if err != nil {
			return nil, err
		}
		copy(f.dst, v)
	}
	if qeReport, err = r.take("QE report", ReportBodySize); err != nil {
		return nil, err
	}
	parseReportBody(&s.QEReport, qeReport)
	v, err := r.take("QE report signature", ECDSASigSize)
	if err != nil {
		return nil, err
	}
	copy(s.QEReportSignature[:], v)
	if s.QEAuthData, err = r.lengthPrefixed("QE authentication data", 2); err != nil {
		return nil, err
	}
	if s.Certification.Type, err = r.u16("certification data type"); err != nil {
		return nil, err
	}
	if s.Certification.Data, err = r.lengthPrefixed("certification data", 4); err != nil {
		return nil, err
	}
	if n := r.remaining(); n != 0 {
		return nil, fail(ReasonMalformed, "quote: signature data: %d trailing bytes after the certification data", n)
	}
	return qeReport, nil
}

func parseHeader(h *Header, b []byte) {
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttestationKeyType = binary.LittleEndian.Uint16(b[2:])
	h.TEEType = binary.LittleEndian.Uint32(b[4:])
	h.QESVN = binary.LittleEndian.Uint16(b[8:])
	h.PCESVN = binary.LittleEndian.Uint16(b[10:])
	copy(h.QEVendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
}

func parseReportBody(rb *ReportBody, b []byte) {
	copy(rb.CPUSVN[:], b[offCPUSVN:])
	rb.MiscSelect = binary.LittleEndian.Uint32(b[offMiscSelect:])
	copy(rb.Attributes[:], b[offAttributes:])
	copy(rb.MREnclave[:], b[offMREnclave:])
	copy(rb.MRSigner[:], b[offMRSigner:])
	rb.ISVProdID = binary.LittleEndian.Uint16(b[offISVProdID:])
	rb.ISVSVN = binary.LittleEndian.Uint16(b[offISVSVN:])
	copy(rb.ReportData[:], b[offReportData:])
}
