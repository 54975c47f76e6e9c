package dcap

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIntelRootFingerprint(t *testing.T) {
	const want = "44:A0:19:6B:2B:99:F8:89:B8:E1:49:E9:5B:80:7A:35:0E:74:24:96:43:99:E8:85:A7:CB:B8:CC:FA:B6:74:D3"
	sum := sha256.Sum256(IntelRoot().Raw)
	assert.Equal(t, strings.ReplaceAll(want, ":", ""), strings.ToUpper(hex.EncodeToString(sum[:])))
	assert.Equal(t, "CN=Intel SGX Root CA,O=Intel Corporation,L=Santa Clara,ST=CA,C=US", IntelRoot().Subject.String())
}

func TestIntelRootMatchesSharedVector(t *testing.T) {
	v := loadVectors(t)
	root, err := LoadRoot(v.rootPEM)
	require.NoError(t, err)
	assert.True(t, root.Equal(IntelRoot()))
}

func TestLoadRootErrors(t *testing.T) {
	v := loadVectors(t)
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	pck := q.Signature.Certification.Data
	leafPEM := pck[:strings.Index(string(pck), "-----END CERTIFICATE-----")+25]
	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty", nil, "dcap: root CA: no PEM certificate found"},
		{"garbage", []byte("not a certificate"), "dcap: root CA: certificate 0: malformed PEM block"},
		{"private key block", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), `PEM type "PRIVATE KEY", want CERTIFICATE`},
		{"two certificates", append(append([]byte{}, v.rootPEM...), v.rootPEM...), "dcap: root CA: got 2 certificates, want 1"},
		{"not a CA", leafPEM, `dcap: root CA: "CN=Intel SGX PCK Certificate`},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "dcap: root CA: certificate 0:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadRoot(tt.in)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
