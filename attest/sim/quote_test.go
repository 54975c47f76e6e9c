package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"testing"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wireQuote is the v3 layout read with the offsets of Intel's specification, independently of
// the dcap package.
type wireQuote struct {
	header, body, qeReport []byte
	isvSig, attKey, qeSig  []byte
	qeAuth                 []byte
	certType               uint16
	certData               []byte
}

func splitQuote(t *testing.T, q []byte) wireQuote {
	t.Helper()
	require.GreaterOrEqual(t, len(q), 436)
	var w wireQuote
	w.header, w.body = q[:48], q[48:432]
	sigLen := binary.LittleEndian.Uint32(q[432:436])
	sig := q[436:]
	require.Len(t, sig, int(sigLen))
	w.isvSig, w.attKey, w.qeReport, w.qeSig = sig[:64], sig[64:128], sig[128:512], sig[512:576]
	authLen := int(binary.LittleEndian.Uint16(sig[576:578]))
	w.qeAuth = sig[578 : 578+authLen]
	rest := sig[578+authLen:]
	w.certType = binary.LittleEndian.Uint16(rest[:2])
	certLen := binary.LittleEndian.Uint32(rest[2:6])
	w.certData = rest[6:]
	require.Len(t, w.certData, int(certLen))
	return w
}

func verifyRaw(t *testing.T, pub *ecdsa.PublicKey, msg, sig []byte) bool {
	t.Helper()
	d := sha256.Sum256(msg)
	return ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

func TestQuoteLayout(t *testing.T) {
	p := testPlatform(t)
	tests := []struct {
		name string
		r    Report
	}{
		{"zero", Report{}},
		{"production", Report{
			MREnclave: sha256.Sum256([]byte("app")), MRSigner: sha256.Sum256([]byte("signer")),
			ISVProdID: 7, ISVSVN: 3, ReportData: attestapi.BindReportData([]byte("key"), [32]byte{9}),
		}},
		{"debug max", Report{ISVProdID: 0xffff, ISVSVN: 0xffff, Debug: true, ReportData: [64]byte{63: 0xff}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := p.Quote(tt.r)
			require.NoError(t, err)
			w := splitQuote(t, q)

			assert.Equal(t, uint16(3), binary.LittleEndian.Uint16(w.header[0:]), "version")
			assert.Equal(t, uint16(2), binary.LittleEndian.Uint16(w.header[2:]), "attestation key type")
			assert.Equal(t, uint32(0), binary.LittleEndian.Uint32(w.header[4:]), "TEE type")
			assert.Equal(t, uint16(QEISVSVN), binary.LittleEndian.Uint16(w.header[8:]), "QE SVN")
			assert.Equal(t, uint16(DefaultPCESVN), binary.LittleEndian.Uint16(w.header[10:]), "PCE SVN")
			assert.Equal(t, "939a7233f79c4ca9940a0db3957f0607", hex.EncodeToString(w.header[12:28]))

			assert.Equal(t, DefaultCPUSVN[:], w.body[0:16])
			assert.Equal(t, tt.r.Debug, w.body[48]&0x02 != 0, "DEBUG")
			assert.Equal(t, byte(0x01), w.body[48]&0x01, "INIT")
			assert.Equal(t, tt.r.MREnclave[:], w.body[64:96])
			assert.Equal(t, tt.r.MRSigner[:], w.body[128:160])
			assert.Equal(t, tt.r.ISVProdID, binary.LittleEndian.Uint16(w.body[256:]))
			assert.Equal(t, tt.r.ISVSVN, binary.LittleEndian.Uint16(w.body[258:]))
			assert.Equal(t, tt.r.ReportData[:], w.body[320:384])

			attPub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, w.attKey...))
			require.NoError(t, err)
			assert.True(t, verifyRaw(t, attPub, q[:432], w.isvSig), "ISV signature over header || body")

			binding := sha256.Sum256(append(bytes.Clone(w.attKey), w.qeAuth...))
			assert.Equal(t, binding[:], w.qeReport[320:352], "QE REPORTDATA binds the attestation key")
			assert.Equal(t, make([]byte, 32), w.qeReport[352:384])
			assert.Equal(t, QEMRSigner[:], w.qeReport[128:160])

			require.Equal(t, uint16(5), w.certType)
			var chain []*x509.Certificate
			rest := w.certData
			for {
				b, r := pem.Decode(rest)
				if b == nil {
					break
				}
				c, err := x509.ParseCertificate(b.Bytes)
				require.NoError(t, err)
				chain, rest = append(chain, c), r
			}
			require.Len(t, chain, 3)
			assert.True(t, chain[0].Equal(p.pck))
			assert.True(t, chain[1].Equal(p.pckCA))
			assert.True(t, chain[2].Equal(p.Root()))
			pckPub, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
			require.True(t, ok)
			assert.True(t, verifyRaw(t, pckPub, w.qeReport, w.qeSig), "QE report signature by the PCK key")
		})
	}
}

// TestQuoteLayoutMatchesIntel checks that the simulated quote has the shape of the real one:
// same header fields and the same signature-data framing up to the PCK chain.
func TestQuoteLayoutMatchesIntel(t *testing.T) {
	real, err := os.ReadFile("../../../shared/testdata/sgx-dcap/quote_v3_ecdsa_p256_pck_chain.bin")
	if os.IsNotExist(err) {
		t.Skip("../shared/testdata/sgx-dcap is absent: no real quote to compare the layout with")
	}
	require.NoError(t, err)
	sim, err := testPlatform(t).Quote(Report{})
	require.NoError(t, err)
	rw, sw := splitQuote(t, real), splitQuote(t, sim)
	assert.Equal(t, rw.header[:4], sw.header[:4], "version and key type")
	assert.Equal(t, rw.header[12:28], sw.header[12:28], "QE vendor ID")
	assert.Equal(t, rw.certType, sw.certType)
	assert.Len(t, sw.qeAuth, len(rw.qeAuth))
	assert.Equal(t, rw.qeReport[48]&0xfb, sw.qeReport[48]&0xfb, "QE attributes under the QE Identity mask")
}
