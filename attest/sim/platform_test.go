package sim

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

func TestNewPlatformCertificates(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := newPlatform(t, PlatformOptions{Now: now})

	root := p.Root()
	assert.Equal(t, "attestmesh simulated SGX Root CA", root.Subject.CommonName)
	assert.Contains(t, root.Subject.Organization[0], "SIMULATION")
	assert.True(t, root.IsCA)
	assert.Equal(t, x509.ECDSA, root.PublicKeyAlgorithm)

	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	inter.AddCert(p.pckCA)
	for _, c := range []*x509.Certificate{p.pck, p.tcbSigning} {
		_, err := c.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		require.NoError(t, err, c.Subject.CommonName)
		assert.False(t, c.IsCA)
	}
	assert.Equal(t, "attestmesh simulated SGX PCK Platform CA", p.pckCA.Subject.CommonName)
	assert.True(t, p.pck.NotBefore.Before(now))
	assert.True(t, p.pck.NotAfter.After(now.Add(6*365*24*time.Hour)))
}

func TestPCKExtension(t *testing.T) {
	tests := []struct {
		name string
		opts PlatformOptions
		want pckExtension
	}{
		{
			name: "defaults",
			want: pckExtension{FMSPC: DefaultFMSPC, CPUSVN: DefaultCPUSVN, PCESVN: DefaultPCESVN},
		},
		{
			name: "custom",
			opts: PlatformOptions{
				FMSPC: [6]byte{0x00, 0x90, 0x6e, 0xa1, 0, 0}, CPUSVN: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255},
				PCESVN: 300, SMTEnabled: true,
			},
			want: pckExtension{
				FMSPC: [6]byte{0x00, 0x90, 0x6e, 0xa1, 0, 0}, CPUSVN: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255},
				PCESVN: 300, SMTEnabled: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlatform(t, tt.opts)
			var raw []byte
			for _, e := range p.pck.Extensions {
				if e.Id.Equal(OIDSGXExtensions) {
					require.Nil(t, raw, "SGX extension twice")
					raw = e.Value
					assert.False(t, e.Critical)
				}
			}
			require.NotNil(t, raw, "no SGX extension")
			got, err := parsePCKExtension(raw)
			require.NoError(t, err)
			assert.Equal(t, tt.want.FMSPC, got.FMSPC)
			assert.Equal(t, tt.want.CPUSVN, got.CPUSVN)
			assert.Equal(t, tt.want.PCESVN, got.PCESVN)
			assert.Equal(t, tt.want.SMTEnabled, got.SMTEnabled)
			assert.Equal(t, [2]byte{}, got.PCEID)
			assert.NotEqual(t, [16]byte{}, got.PPID)
			assert.Equal(t, p.ext, got)
		})
	}
}

func TestPCKExtensionParseErrors(t *testing.T) {
	good, err := (&pckExtension{CPUSVN: DefaultCPUSVN, PCESVN: 13}).marshal()
	require.NoError(t, err)
	tests := []struct {
		name string
		der  []byte
		want string
	}{
		{"empty", nil, "SGX extension value"},
		{"truncated", good[:len(good)-3], "SGX extension value"},
		{"trailing", append(bytes.Clone(good), 0x05, 0x00), "trailing bytes"},
		{"empty sequence", []byte{0x30, 0x00}, "PPID missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parsePCKExtension(tt.der)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestNewPlatformRejectsUnknownTCBStatus(t *testing.T) {
	_, err := NewPlatform(nil, PlatformOptions{TCBStatus: "Fine"})
	require.ErrorContains(t, err, `sim: unknown TCB status "Fine"`)
}

func TestPlatformMarshalRoundTrip(t *testing.T) {
	p := newPlatform(t, PlatformOptions{TCBStatus: dcap.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-00615"}})
	data, err := p.Marshal()
	require.NoError(t, err)
	q, err := UnmarshalPlatform(data)
	require.NoError(t, err)

	assert.True(t, p.Root().Equal(q.Root()))
	assert.True(t, p.pckCA.Equal(q.pckCA))
	assert.True(t, p.pck.Equal(q.pck))
	assert.True(t, p.tcbSigning.Equal(q.tcbSigning))
	assert.True(t, p.pckKey.Equal(q.pckKey))
	assert.True(t, p.tcbKey.Equal(q.tcbKey))
	assert.True(t, p.attKey.Equal(q.attKey))
	assert.Equal(t, p.ext, q.ext)
	status, adv := q.TCBStatus()
	assert.Equal(t, dcap.TCBSWHardeningNeeded, status)
	assert.Equal(t, []string{"INTEL-SA-00615"}, adv)

	again, err := q.Marshal()
	require.NoError(t, err)
	assert.Equal(t, data, again, "marshal is stable")
}

func TestTwoPlatformsDiffer(t *testing.T) {
	a, b := newPlatform(t, PlatformOptions{}), newPlatform(t, PlatformOptions{})
	assert.False(t, a.Root().Equal(b.Root()))
	assert.False(t, a.attKey.Equal(b.attKey))
	assert.False(t, a.pckKey.Equal(b.pckKey))
	assert.NotEqual(t, a.ext.PPID, b.ext.PPID)
}

// bundleBlocks splits a marshalled platform into its PEM blocks.
func bundleBlocks(t *testing.T, data []byte) []*pem.Block {
	t.Helper()
	var blocks []*pem.Block
	for {
		b, rest := pem.Decode(data)
		if b == nil {
			require.Empty(t, bytes.TrimSpace(rest))
			return blocks
		}
		blocks = append(blocks, b)
		data = rest
	}
}

func encodeBlocks(blocks []*pem.Block) []byte {
	var buf bytes.Buffer
	for _, b := range blocks {
		_ = pem.Encode(&buf, b)
	}
	return buf.Bytes()
}

func TestUnmarshalPlatformRejects(t *testing.T) {
	p := newPlatform(t, PlatformOptions{})
	other := newPlatform(t, PlatformOptions{})
	data, err := p.Marshal()
	require.NoError(t, err)
	otherData, err := other.Marshal()
	require.NoError(t, err)
	blocks := bundleBlocks(t, data)
	otherBlocks := bundleBlocks(t, otherData)
	require.Len(t, blocks, 10, "4 certificates, 2 CRLs, 3 keys, parameters")

	without := func(i int) []byte {
		bs := append([]*pem.Block{}, blocks[:i]...)
		return encodeBlocks(append(bs, blocks[i+1:]...))
	}
	replaced := func(i int, b *pem.Block) []byte {
		bs := append([]*pem.Block{}, blocks...)
		bs[i] = b
		return encodeBlocks(bs)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "parameters missing"},
		{"no root", without(0), `"root" certificate missing`},
		{"no attestation key", without(8), `"attestation" key missing`},
		{"no parameters", without(9), "parameters missing"},
		{"one CRL without the other", without(4), "one CRL without the other"},
		{"foreign CRL", replaced(5, otherBlocks[5]), `"pck-crl" not signed by its CA`},
		{"duplicate block", append(bytes.Clone(data), pem.EncodeToMemory(blocks[1])...), "duplicate"},
		{"unknown block", append(bytes.Clone(data), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}})...), "unexpected PEM block"},
		{"trailing garbage", append(bytes.Clone(data), "garbage"...), "trailing data"},
		{"foreign root", replaced(0, otherBlocks[0]), "not signed by its issuer"},
		{"foreign PCK key", replaced(6, otherBlocks[6]), `"pck" key does not match`},
		{"bad parameters", replaced(9, &pem.Block{Type: pemParams, Bytes: []byte(`{"version":1,"tcb_status":"UpToDate","x":1}`)}), "unknown field"},
		{"bad status", replaced(9, &pem.Block{Type: pemParams, Bytes: []byte(`{"version":1,"tcb_status":"Great"}`)}), "unknown TCB status"},
		{"bad version", replaced(9, &pem.Block{Type: pemParams, Bytes: []byte(`{"version":2,"tcb_status":"UpToDate"}`)}), "version 2"},
		{"oversized", make([]byte, maxPlatformSize+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalPlatform(tt.data)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Contains(t, err.Error(), "sim: ")
		})
	}
}

// A platform saved before CRLs existed still loads; it has no CRLs to offer.
func TestUnmarshalPlatformWithoutCRLs(t *testing.T) {
	p := newPlatform(t, PlatformOptions{})
	data, err := p.Marshal()
	require.NoError(t, err)
	blocks := bundleBlocks(t, data)
	old, err := UnmarshalPlatform(encodeBlocks(append(append([]*pem.Block{}, blocks[:4]...), blocks[6:]...)))
	require.NoError(t, err)
	assert.False(t, old.HasCRLs())
	assert.True(t, p.HasCRLs())
	c, err := old.Collateral(time.Now())
	require.NoError(t, err)
	assert.Nil(t, c.PCKCRL)
}

func FuzzUnmarshalPlatform(f *testing.F) {
	p := newPlatform(f, PlatformOptions{})
	data, err := p.Marshal()
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := UnmarshalPlatform(b)
		if err != nil {
			return
		}
		_, err = q.Quote(Report{})
		require.NoError(t, err)
	})
}
