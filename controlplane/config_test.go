package controlplane_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane"
)

// TestConfigValidate: a bad configuration is refused before anything starts, with every
// problem named by the flag that fixes it.
func TestConfigValidate(t *testing.T) {
	good := func() controlplane.Config {
		return controlplane.Config{
			DataDir: t.TempDir(), TrustDomain: "attestmesh.local",
			MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			Simulation: true, LASAddr: "127.0.0.1:0",
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*controlplane.Config)
		want   []string
	}{
		{"valid", func(*controlplane.Config) {}, nil},
		{"no data dir", func(c *controlplane.Config) { c.DataDir = "" }, []string{"--data-dir is required"}},
		{"bad trust domain", func(c *controlplane.Config) { c.TrustDomain = "Not A Domain" }, []string{`--trust-domain "Not A Domain"`}},
		{"bad address", func(c *controlplane.Config) { c.XDSAddr = "18000" }, []string{`--xds-addr "18000": want host:port`}},
		{"simulation without LAS", func(c *controlplane.Config) { c.LASAddr = "" }, []string{"--las-addr is required with --simulation"}},
		{"half a webhook key pair", func(c *controlplane.Config) { c.WebhookCertFile = "c.pem" }, []string{"--webhook-cert-file and --webhook-key-file go together"}},
		{"negative TTL", func(c *controlplane.Config) { c.SVIDTTL = -1 }, []string{"--svid-ttl -1ns: must not be negative"}},
		{"negative limit", func(c *controlplane.Config) { c.Limits.MaxSecrets = -1 }, []string{"--max-secrets-per-session -1: must not be negative"}},
		{"anchor inside the data dir", func(c *controlplane.Config) { c.StoreAnchor = filepath.Join(c.DataDir, "sub", "gen") },
			[]string{"the anchor must live outside --data-dir"}},
		{"default anchor beside a key file inside the data dir", func(c *controlplane.Config) { c.StoreKeyFile = filepath.Join(c.DataDir, "store.key") },
			[]string{"store.key.generation: the anchor must live outside --data-dir"}},
		{"unknown self-attestation", func(c *controlplane.Config) { c.SelfAttestation = "tpm" },
			[]string{`--self-attestation "tpm": want auto, gramine, simulation or none`}},
		{"simulated self-attestation without simulation", func(c *controlplane.Config) {
			c.Simulation, c.SelfAttestation = false, controlplane.SelfAttestSimulation
		}, []string{"--self-attestation simulation needs --simulation"}},
		{"recovery keys", func(c *controlplane.Config) {
			c.RecoveryKeyFiles, c.RecoveryThreshold = []string{testKey("rsa3072.pub.pem"), testKey("x25519-a.pub.pem")}, 2
		}, nil},
		{"recovery threshold above the keys", func(c *controlplane.Config) {
			c.RecoveryKeyFiles, c.RecoveryThreshold = []string{testKey("rsa3072.pub.pem")}, 2
		}, []string{"--recovery-key, --recovery-threshold: recovery: threshold 2: want 1 to 1"}},
		{"recovery threshold without keys", func(c *controlplane.Config) { c.RecoveryThreshold = 2 }, []string{"--recovery-threshold 2 needs --recovery-key"}},
		{"negative recovery threshold", func(c *controlplane.Config) {
			c.RecoveryKeyFiles, c.RecoveryThreshold = []string{testKey("rsa3072.pub.pem")}, -1
		}, []string{"--recovery-threshold -1: must not be negative"}},
		{"recovery key twice", func(c *controlplane.Config) {
			c.RecoveryKeyFiles = []string{testKey("rsa3072.pub.pem"), testKey("rsa3072-pkcs1.pub.pem")}
		}, []string{"is given twice"}},
		{"small RSA recovery key", func(c *controlplane.Config) { c.RecoveryKeyFiles = []string{testKey("rsa2048.pub.pem")} },
			[]string{"rsa2048.pub.pem: recovery: RSA key of 2048 bits: at least 3072"}},
		{"private recovery key", func(c *controlplane.Config) { c.RecoveryKeyFiles = []string{testKey("x25519-a.pem")} },
			[]string{"x25519-a.pem: recovery: this is a private key"}},
		{"missing recovery key", func(c *controlplane.Config) { c.RecoveryKeyFiles = []string{"/nonexistent.pem"} },
			[]string{"--recovery-key /nonexistent.pem: open /nonexistent.pem: no such file"}},
		{"remove the record and seal one", func(c *controlplane.Config) {
			c.RecoveryKeyFiles, c.RemoveRecoveryRecord = []string{testKey("rsa3072.pub.pem")}, true
		}, []string{"--remove-recovery-record and --recovery-key exclude each other"}},
		{"every problem at once", func(c *controlplane.Config) { c.DataDir, c.MgmtAddr = "", "x" },
			[]string{"--data-dir is required", `--mgmt-addr "x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// testKey is a recovery test key of controlplane/recovery/testdata (made with openssl).
func testKey(name string) string { return filepath.Join("recovery", "testdata", name) }

// TestDefaultSidecarBinary: the sidecar build beside the executable is the default sidecar
// binary only when it is a regular file there.
func TestDefaultSidecarBinary(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		lean  bool
	}{
		{name: "beside it", setup: func(t *testing.T, dir string) {
			t.Helper()
			require.NoError(t, os.WriteFile(filepath.Join(dir, controlplane.SidecarName), []byte("lean"), 0o755))
		}, lean: true},
		{name: "absent", setup: func(*testing.T, string) {}},
		{name: "a directory of that name", setup: func(t *testing.T, dir string) {
			t.Helper()
			require.NoError(t, os.Mkdir(filepath.Join(dir, controlplane.SidecarName), 0o755))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "attestmesh")
			require.NoError(t, os.WriteFile(exe, []byte("full"), 0o755))
			tt.setup(t, dir)
			want := exe
			if tt.lean {
				want = filepath.Join(dir, controlplane.SidecarName)
			}
			assert.Equal(t, want, controlplane.DefaultSidecarBinary(exe))
		})
	}
}
