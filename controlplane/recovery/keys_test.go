package recovery

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// opensslFingerprints reads testdata/fingerprints.txt: the fingerprints openssl computed.
func opensslFingerprints(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "fingerprints.txt"))
	require.NoError(t, err)
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, fp, ok := strings.Cut(sc.Text(), " ")
		require.True(t, ok, sc.Text())
		out[name] = fp
	}
	require.NoError(t, sc.Err())
	return out
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func testPublicKey(t *testing.T, name string) *PublicKey {
	t.Helper()
	k, err := ParsePublicKey(readTestdata(t, name+".pub.pem"))
	require.NoError(t, err, name)
	return k
}

func testPrivateKey(t *testing.T, name string) *PrivateKey {
	t.Helper()
	k, err := ParsePrivateKey(readTestdata(t, name+".pem"))
	require.NoError(t, err, name)
	return k
}

func TestKeysMatchOpenSSLFingerprints(t *testing.T) {
	want := opensslFingerprints(t)
	for _, tc := range []struct {
		name, alg string
	}{
		{"rsa3072", AlgRSAOAEP},
		{"rsa4096", AlgRSAOAEP},
		{"x25519-a", AlgHPKEX25519},
		{"x25519-b", AlgHPKEX25519},
		{"p256-sec1", AlgHPKEP256},
		{"p256-pkcs8", AlgHPKEP256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := testPublicKey(t, tc.name)
			assert.Equal(t, want[tc.name], pub.Fingerprint().String(), "the public key's fingerprint is openssl's")
			assert.Equal(t, tc.alg, pub.Alg())
			priv := testPrivateKey(t, tc.name)
			assert.Equal(t, pub.Fingerprint(), priv.Fingerprint(), "the private key names the same fingerprint")
			assert.NotContains(t, priv.String(), "PRIVATE")
			assert.Contains(t, priv.String(), want[tc.name])
			fp, err := ParseFingerprint(want[tc.name])
			require.NoError(t, err)
			assert.Equal(t, pub.Fingerprint(), fp)
		})
	}
}

func TestPKCS1Keys(t *testing.T) {
	want := opensslFingerprints(t)["rsa3072"]
	pub, err := ParsePublicKey(readTestdata(t, "rsa3072-pkcs1.pub.pem"))
	require.NoError(t, err)
	assert.Equal(t, want, pub.Fingerprint().String())
	priv, err := ParsePrivateKey(readTestdata(t, "rsa3072-pkcs1.pem"))
	require.NoError(t, err)
	assert.Equal(t, want, priv.Fingerprint().String())
}

func TestKeysRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		private bool
		want    string
	}{
		{"RSA-2048 public", "rsa2048.pub.pem", false, "RSA key of 2048 bits: at least 3072"},
		{"RSA-2048 private", "rsa2048.pem", true, "RSA key of 2048 bits: at least 3072"},
		{"P-384 public", "p384.pub.pem", false, "EC key on P-384"},
		{"P-384 private", "p384.pem", true, "EC key on P-384"},
		{"Ed25519 public", "ed25519.pub.pem", false, "ed25519.PublicKey key: supported recovery keys are"},
		{"Ed25519 private", "ed25519.pem", true, "ed25519.PrivateKey key: supported recovery keys are"},
		{"encrypted private", "x25519-encrypted.pem", true, "openssl pkey -in KEY.pem | attestmesh recover"},
		{"legacy-encrypted RSA private", "rsa3072-legacy-enc.pem", true, "openssl pkey -in KEY.pem | attestmesh recover"},
		{"private given as public", "x25519-a.pem", false, "give the control plane the public key only"},
		{"public given as private", "x25519-a.pub.pem", true, "this is a public key"},
		{"fingerprints file", "fingerprints.txt", false, `no PEM "PUBLIC KEY" block`},
		{"fingerprints file as private", "fingerprints.txt", true, `no PEM "PRIVATE KEY" block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.private {
				_, err = ParsePrivateKey(readTestdata(t, tc.file))
			} else {
				_, err = ParsePublicKey(readTestdata(t, tc.file))
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestPrivateKeyErrorsQuoteNothing(t *testing.T) {
	for _, name := range []string{"x25519-a", "rsa3072", "p256-sec1"} {
		blk, _ := pem.Decode(readTestdata(t, name+".pem"))
		if blk.Type == "EC PARAMETERS" {
			blk, _ = pem.Decode(readTestdata(t, name+".pem")[len(pem.EncodeToMemory(blk)):])
		}
		require.NotNil(t, blk)
		// A damaged key: the PEM is fine, the DER inside is cut short.
		damaged := pem.EncodeToMemory(&pem.Block{Type: blk.Type, Bytes: blk.Bytes[:len(blk.Bytes)-5]})
		_, err := ParsePrivateKey(damaged)
		require.Error(t, err, name)
		tail := blk.Bytes[len(blk.Bytes)-20 : len(blk.Bytes)-5]
		for _, enc := range []string{hex.EncodeToString(tail), base64.StdEncoding.EncodeToString(tail)[:12]} {
			assert.NotContains(t, err.Error(), enc, name)
		}
	}
}

func TestParseFingerprint(t *testing.T) {
	const shape = "want sha256: and 64 hex characters"
	for s, want := range map[string]string{
		"": shape, "sha256:": shape, "sha1:" + strings.Repeat("a", 64): shape, "sha256:" + strings.Repeat("a", 63): shape,
		"sha256:" + strings.Repeat("g", 64): "not hex",
	} {
		_, err := ParseFingerprint(s)
		require.Error(t, err, s)
		assert.Contains(t, err.Error(), want, s)
	}
}
