package dcap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseQuoteRealVectors(t *testing.T) {
	v := loadVectors(t)
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	assert.Equal(t, uint16(3), q.Header.Version)
	assert.Equal(t, uint16(AttestationKeyP256), q.Header.AttestationKeyType)
	assert.Equal(t, uint16(9), q.Header.QESVN)
	assert.Equal(t, uint16(13), q.Header.PCESVN)
	assert.Equal(t, "939a7233f79c4ca9940a0db3957f0607", hex.EncodeToString(q.Header.QEVendorID[:]))
	assert.Equal(t, wantMREnclave, hex.EncodeToString(q.Body.MREnclave[:]))
	assert.Equal(t, wantMRSigner, hex.EncodeToString(q.Body.MRSigner[:]))
	assert.Equal(t, uint16(1), q.Signature.QEReport.ISVProdID)
	assert.Equal(t, uint16(9), q.Signature.QEReport.ISVSVN)
	assert.Len(t, q.Signature.QEAuthData, 32)
	assert.Equal(t, uint16(CertDataPCKChain), q.Signature.Certification.Type)
	assert.True(t, bytes.HasPrefix(q.Signature.Certification.Data, []byte("-----BEGIN CERTIFICATE-----")))
	// Reserved bytes are zero in the real quote, so Marshal gives back the same bytes.
	assert.Equal(t, v.quote, q.Marshal())

	e, err := ParseQuote(v.eppid)
	require.NoError(t, err)
	assert.Equal(t, uint16(3), e.Signature.Certification.Type, "encrypted PPID (RSA-3072)")
	assert.Equal(t, v.eppid, e.Marshal())
}

// TestParseQuoteTruncated cuts the real quote at every length: each one is an error that
// names a field, never a panic.
func TestParseQuoteTruncated(t *testing.T) {
	v := loadVectors(t)
	for n := range len(v.quote) {
		q, err := ParseQuote(v.quote[:n])
		require.Error(t, err, "length %d", n)
		require.Nil(t, q)
		require.Equal(t, ReasonMalformed, ReasonOf(err), "length %d: %v", n, err)
		require.Regexp(t, `^dcap: quote: `, err.Error())
	}
}

func TestParseQuoteErrors(t *testing.T) {
	v := loadVectors(t)
	const sigStart = HeaderSize + ReportBodySize + 4
	authLenOff := sigStart + ECDSASigSize + ECDSAKeySize + ReportBodySize + ECDSASigSize
	sigLen := len(v.quote) - sigStart
	tests := []struct {
		name string
		edit func([]byte) []byte
		want Reason
		msg  string
	}{
		{"empty", func([]byte) []byte { return nil }, ReasonMalformed, "dcap: quote: header: need 48 bytes, only 0 remain"},
		{"header only", func(b []byte) []byte { return b[:HeaderSize] }, ReasonMalformed, "dcap: quote: ISV report body: need 384 bytes, only 0 remain"},
		{"version 4", func(b []byte) []byte { b[0] = 4; return b }, ReasonUnsupported, "dcap: quote: header: version: got 4, want 3"},
		{"key type 3", func(b []byte) []byte { b[2] = 3; return b }, ReasonUnsupported, "dcap: quote: header: attestation key type: got 3, want 2 (ECDSA-P256)"},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ReasonMalformed, "dcap: quote: 1 trailing bytes after the signature data"},
		{
			"signature data length too large",
			func(b []byte) []byte { binary.LittleEndian.PutUint32(b[sigStart-4:], 0xffffffff); return b },
			ReasonMalformed, "dcap: quote: signature data: length 4294967295 exceeds remaining",
		},
		{
			"signature data length too small",
			func(b []byte) []byte { binary.LittleEndian.PutUint32(b[sigStart-4:], uint32(sigLen-1)); return b },
			ReasonMalformed, "dcap: quote: 1 trailing bytes after the signature data",
		},
		{
			"QE authentication data too long",
			func(b []byte) []byte {
				binary.LittleEndian.PutUint16(b[authLenOff:], 700)
				b = b[:authLenOff+2+12]
				binary.LittleEndian.PutUint32(b[sigStart-4:], uint32(len(b)-sigStart))
				return b
			},
			ReasonMalformed, "dcap: quote: signature data: QE authentication data: length 700 exceeds remaining 12 bytes",
		},
		{
			"certification data cut short",
			func(b []byte) []byte {
				b = b[:len(b)-1]
				binary.LittleEndian.PutUint32(b[sigStart-4:], uint32(len(b)-sigStart))
				return b
			},
			ReasonMalformed, "dcap: quote: signature data: certification data: length 3678 exceeds remaining 3677 bytes",
		},
		{
			"bytes after the certification data",
			func(b []byte) []byte {
				b = append(b, 0, 0)
				binary.LittleEndian.PutUint32(b[sigStart-4:], uint32(len(b)-sigStart))
				return b
			},
			ReasonMalformed, "dcap: quote: signature data: 2 trailing bytes after the certification data",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseQuote(tt.edit(bytes.Clone(v.quote)))
			require.Error(t, err)
			assert.Nil(t, q)
			assert.Equal(t, tt.want, ReasonOf(err))
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// TestQuoteMarshalRoundTrip builds a quote from the structs, as attest/sim does, and parses it.
func TestQuoteMarshalRoundTrip(t *testing.T) {
	q := &Quote{
		Header: Header{Version: QuoteVersion3, AttestationKeyType: AttestationKeyP256, QESVN: 2, PCESVN: 3},
		Body:   ReportBody{ISVProdID: 7, ISVSVN: 9, MiscSelect: 0x01020304, Attributes: [16]byte{AttributeDebug}},
		Signature: SignatureData{
			QEAuthData:    []byte{1, 2, 3},
			Certification: CertificationData{Type: CertDataPCKChain, Data: []byte("pem")},
		},
	}
	q.Body.MREnclave[0], q.Body.ReportData[63], q.Signature.QEReport.MRSigner[31] = 0xaa, 0xbb, 0xcc
	b := q.Marshal()
	require.Len(t, b, HeaderSize+ReportBodySize+4+64+64+384+64+2+3+2+4+3)
	got, err := ParseQuote(b)
	require.NoError(t, err)
	assert.Equal(t, q, got)
	assert.True(t, got.Body.Debug())
}
