package cli

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
)

func TestInstall(t *testing.T) {
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("attestmesh.local")})
	require.NoError(t, err)
	t.Setenv("TEST_CA_PEM", string(auth.BundlePEM()))
	t.Setenv("TEST_NOT_PEM", "hello")

	self, err := os.Executable()
	require.NoError(t, err)
	selfBytes, err := os.ReadFile(self)
	require.NoError(t, err)

	tests := []struct {
		name    string
		caEnv   bool
		env     string
		wantErr string
	}{
		{"binary only", false, "", ""},
		{"binary and CA", true, "TEST_CA_PEM", ""},
		{"not a certificate", true, "TEST_NOT_PEM", "$TEST_NOT_PEM does not hold a PEM certificate"},
		{"unset", true, "TEST_UNSET_VARIABLE", "does not hold a PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := installConfig{Dest: filepath.Join(dir, "attestmesh")}
			if tt.caEnv {
				cfg.CAEnv, cfg.CAFile = tt.env, filepath.Join(dir, "ca.pem")
			}
			var out bytes.Buffer
			err := runInstall(cfg, &out)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NoFileExists(t, cfg.CAFile)
				return
			}
			require.NoError(t, err)
			got, err := os.ReadFile(cfg.Dest)
			require.NoError(t, err)
			assert.Equal(t, sha256.Sum256(selfBytes), sha256.Sum256(got), "an exact copy of the executable")
			fi, err := os.Stat(cfg.Dest)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
			if tt.caEnv {
				pem, err := os.ReadFile(cfg.CAFile)
				require.NoError(t, err)
				assert.Equal(t, auth.BundlePEM(), pem)
				assert.Contains(t, out.String(), "attestmesh CA attestmesh.local")
			}
		})
	}
}

func TestInstallFlags(t *testing.T) {
	var out bytes.Buffer
	err := runInstall(installConfig{Dest: filepath.Join(t.TempDir(), "x"), CAEnv: "X"}, &out)
	require.ErrorContains(t, err, "--ca-env and --ca-file go together")
}
