package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// opensslVerify runs the real `openssl verify` on leaf against the trust anchor ca (with
// optional untrusted intermediates) and returns its combined output and whether it exited 0.
func opensslVerify(t *testing.T, ca, leaf *x509.Certificate, intermediates []*x509.Certificate, args ...string) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: these tests check chains with the real openssl verify")
	}
	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	leafPath := filepath.Join(dir, "leaf.pem")
	require.NoError(t, os.WriteFile(caPath, MarshalCertsPEM(ca), 0o600))
	require.NoError(t, os.WriteFile(leafPath, MarshalCertsPEM(leaf), 0o600))
	cmdArgs := []string{"verify", "-CAfile", caPath}
	if len(intermediates) > 0 {
		untrusted := filepath.Join(dir, "untrusted.pem")
		require.NoError(t, os.WriteFile(untrusted, MarshalCertsPEM(intermediates...), 0o600))
		cmdArgs = append(cmdArgs, "-untrusted", untrusted)
	}
	cmdArgs = append(cmdArgs, args...)
	cmdArgs = append(cmdArgs, leafPath)
	out, err := exec.CommandContext(t.Context(), bin, cmdArgs...).CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// requireOpenSSLOK asserts that openssl verify accepts the chain.
func requireOpenSSLOK(t *testing.T, ca, leaf *x509.Certificate, intermediates []*x509.Certificate, args ...string) {
	t.Helper()
	out, ok := opensslVerify(t, ca, leaf, intermediates, args...)
	require.True(t, ok, "openssl verify %v: %s", args, out)
	require.True(t, strings.HasSuffix(out, "leaf.pem: OK"), "openssl verify %v: %s", args, out)
}

func mustKey(tb testing.TB, alg Algorithm) crypto.Signer {
	tb.Helper()
	k, err := GenerateKey(alg)
	require.NoError(tb, err)
	return k
}

// mustCSR makes a DER CSR signed by key.
func mustCSR(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "workload"},
		DNSNames: []string{"ignored.example"},
	}, key)
	require.NoError(tb, err)
	return der
}

// mustRoot makes a self-signed CA valid for a day.
func mustRoot(tb testing.TB, alg Algorithm, maxPathLen int) (*x509.Certificate, crypto.Signer) {
	tb.Helper()
	key := mustKey(tb, alg)
	cert, err := IssueCA(CARequest{
		PublicKey: key.Public(), IssuerKey: key, CommonName: "root " + string(alg),
		ValidFor: 24 * 3600e9, MaxPathLen: maxPathLen,
	})
	require.NoError(tb, err)
	return cert, key
}
