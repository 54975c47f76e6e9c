package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/recovery"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

func fingerprintOf(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(testKey(name + ".pub.pem"))
	require.NoError(t, err)
	k, err := recovery.ParsePublicKey(b)
	require.NoError(t, err)
	return k.Fingerprint().String()
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

// setRecord replaces the raw recovery record of the store under dir (as someone with write
// access to the disk, and no key, could).
func setRecord(t *testing.T, dir string, f func(old []byte) []byte) {
	t.Helper()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	defer b.Close()
	old, err := store.ReadRecoveryRecord(t.Context(), b)
	require.NoError(t, err)
	require.NoError(t, b.Apply(t.Context(), nil, []store.Write{{Key: "\x00attestmesh/recovery", Value: f(old)}}))
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
	return dst
}

// TestRecoverLostStoreKey is the operator's story: a control plane sealed its store key to
// three recovery keys, two of them needed; the key file is lost. Two holders each decrypt
// their share and seal it to the combiner's key; the combiner reconstructs the key and the
// control plane starts with it and serves its sessions. On the way, everything that must be
// refused is.
func TestRecoverLostStoreKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	keyDir := t.TempDir()
	keyFile := filepath.Join(keyDir, "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	dataDir := filepath.Join(t.TempDir(), "data")
	recoveryKeys := []string{testKey("rsa3072.pub.pem"), testKey("x25519-a.pub.pem"), testKey("p256-sec1.pub.pem")}
	cfg := controlplane.Config{
		DataDir: dataDir, StoreKeyFile: keyFile, TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		RecoveryKeyFiles: recoveryKeys, RecoveryThreshold: 2,
	}
	idDir := t.TempDir()
	first := startWith(t, cfg)
	c := first.client(t, idDir)
	_, err = c.Create(ctx, []byte("name: lost\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	created, err := c.Create(ctx, []byte("name: lost/app\nversion: \"0.3\"\nsecrets:\n  - name: password\n    kind: ascii\n    size: 16\n    export_public: false\n"))
	require.NoError(t, err)
	bundle := first.addrs.BundlePEM
	first.stop(t)

	// The key file is lost; its rollback anchor (beside it) is not.
	require.NoError(t, os.Remove(keyFile))
	storeDB := filepath.Join(dataDir, store.BoltFileName)
	before := fileSum(t, storeDB)

	// Whoever reaches the store exports the record; the holders of rsa3072 and p256-sec1 each
	// decrypt their share and seal it to the combiner's key (x25519-b).
	work := t.TempDir()
	recordFile := filepath.Join(work, "record.json")
	var stdout, stderr bytes.Buffer
	require.NoError(t, controlplane.RecoveryRecord(ctx, controlplane.RecoveryRecordConfig{StoreSource: controlplane.StoreSource{DataDir: dataDir}, Out: recordFile, Stdout: &stdout, Stderr: &stderr}))
	assert.Contains(t, stdout.String(), "2 of 3 shares, from the keys "+fingerprintOf(t, "rsa3072")+" (share 1)")
	share1, share3 := filepath.Join(work, "share1.pem"), filepath.Join(work, "share3.pem")
	stderr.Reset()
	require.NoError(t, controlplane.RecoveryShare(ctx, controlplane.RecoveryShareConfig{
		RecordFile: recordFile, KeyFile: testKey("rsa3072.pem"), To: testKey("x25519-b.pub.pem"), Out: share1, Stderr: &stderr,
	}))
	assert.Contains(t, stderr.String(), "share 1 of recovery record")
	assert.Contains(t, stderr.String(), "sealed to "+fingerprintOf(t, "x25519-b"))
	keyPEM, err := os.ReadFile(testKey("p256-sec1.pem"))
	require.NoError(t, err)
	require.NoError(t, controlplane.RecoveryShare(ctx, controlplane.RecoveryShareConfig{
		StoreSource: controlplane.StoreSource{DataDir: dataDir}, KeyFile: "-", Stdin: bytes.NewReader(keyPEM), To: testKey("x25519-b.pub.pem"), Out: share3, Stderr: io.Discard,
	}), "the holder's key from standard input, the record from the store")
	for _, f := range []string{share1, share3} {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}

	// Refusals: none writes a key.
	otherData := filepath.Join(t.TempDir(), "other")
	otherKey := filepath.Join(t.TempDir(), "other.key")
	_, err = store.GenerateKeyFile(otherKey)
	require.NoError(t, err)
	noRecord := startWith(t, controlplane.Config{
		DataDir: otherData, StoreKeyFile: otherKey, TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
	})
	noRecord.stop(t)
	copied := copyDir(t, otherData)
	raw, err := os.ReadFile(recordFile)
	require.NoError(t, err)
	setRecord(t, copied, func([]byte) []byte { return raw })
	tampered := copyDir(t, dataDir)
	setRecord(t, tampered, func(old []byte) []byte {
		// Another MAC: the first hex digit changed.
		i := bytes.Index(old, []byte(`"mac": "`)) + len(`"mac": "`)
		out := bytes.Clone(old)
		if out[i] == '0' {
			out[i] = '1'
		} else {
			out[i] = '0'
		}
		return out
	})
	keyOut := filepath.Join(keyDir, "store.key")
	linkedData := filepath.Join(t.TempDir(), "linked")
	require.NoError(t, os.Symlink(dataDir, linkedData))
	fpA, fpB, fpC := fingerprintOf(t, "rsa3072"), fingerprintOf(t, "x25519-a"), fingerprintOf(t, "p256-sec1")
	expects := "expects 2 of 3 shares, from the keys " + fpA + " (share 1), " + fpB + " (share 2), " + fpC + " (share 3)"
	for _, tc := range []struct {
		name    string
		dataDir string
		keys    []string
		shares  []string
		keyOut  string
		want    []string
	}{
		{"a wrong key", dataDir, []string{testKey("rsa4096.pem")}, []string{share1}, keyOut,
			[]string{"--key " + testKey("rsa4096.pem"), "the key " + fingerprintOf(t, "rsa4096") + " is neither one of the record's recovery keys", expects}},
		{"one share of two", dataDir, []string{testKey("x25519-b.pem")}, []string{share1}, keyOut,
			[]string{"needs 2 of its 3 shares, and 1 was given: share 1 (" + fpA + ")", "1 more from the keys " + fpB + " (share 2), " + fpC + " (share 3)"}},
		{"one recovery key of two", dataDir, []string{testKey("x25519-a.pem")}, nil, keyOut,
			[]string{"needs 2 of its 3 shares, and 1 was given: share 2 (" + fpB + ")"}},
		{"sealed shares without their key", dataDir, nil, []string{share1, share3}, keyOut,
			[]string{"--share " + share1, "sealed to " + fingerprintOf(t, "x25519-b") + ": give its private key with --key"}},
		{"the same share twice", dataDir, []string{testKey("x25519-b.pem")}, []string{share1, share1}, keyOut, []string{"1 was given"}},
		{"a tampered record", tampered, []string{testKey("x25519-b.pem")}, []string{share1, share3}, keyOut,
			[]string{"reconstruct a key that does not authenticate the record"}},
		{"a record from another store", copied, []string{testKey("x25519-b.pem")}, []string{share1, share3}, keyOut,
			[]string{"the shares reconstruct the key that sealed the recovery record", "but it does not open the store under --data-dir " + copied,
				"copied in from another store"}},
		{"a store without a record", otherData, []string{testKey("rsa3072.pem")}, nil, keyOut,
			[]string{"the store under --data-dir " + otherData + " holds no recovery record"}},
		{"key out exists", dataDir, []string{testKey("x25519-b.pem")}, []string{share1, share3}, recordFile,
			[]string{"--key-out " + recordFile + " exists: refusing to overwrite it"}},
		{"key out in the data dir", dataDir, []string{testKey("x25519-b.pem")}, []string{share1, share3}, filepath.Join(dataDir, "key"),
			[]string{"is inside --data-dir"}},
		{"key out in the data dir, reached through a link", linkedData, []string{testKey("x25519-b.pem")}, []string{share1, share3},
			filepath.Join(dataDir, "key"), []string{"is inside --data-dir " + linkedData}},
		{"nothing given", dataDir, nil, nil, keyOut, []string{"give the recovery private keys (--key) or the holders' shares (--share)"}},
		{"a public key as key", dataDir, []string{testKey("x25519-b.pub.pem")}, []string{share1}, keyOut, []string{"this is a public key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := controlplane.Recover(ctx, controlplane.RecoverConfig{
				StoreSource: controlplane.StoreSource{DataDir: tc.dataDir}, KeyFiles: tc.keys, ShareFiles: tc.shares, KeyOut: tc.keyOut, Stdout: &out, Stderr: &out,
			})
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NoFileExists(t, keyOut)
			assert.Empty(t, out.String(), "nothing printed")
		})
	}

	// The combiner: its own key opens the sealed shares; a recovery key given directly counts
	// as its share.
	stdout.Reset()
	require.NoError(t, controlplane.Recover(ctx, controlplane.RecoverConfig{
		StoreSource: controlplane.StoreSource{DataDir: dataDir}, KeyFiles: []string{testKey("x25519-b.pem")}, ShareFiles: []string{share1, share3}, KeyOut: keyOut, Stdout: &stdout, Stderr: io.Discard,
	}))
	t.Logf("attestmesh recover:\n%s", stdout.String())
	assert.Contains(t, stdout.String(), "share 1  "+fpA+"  from --share "+share1+" (sealed to --key "+testKey("x25519-b.pem")+")")
	assert.Contains(t, stdout.String(), "share 3  "+fpC)
	assert.Contains(t, stdout.String(), "it authenticates the record and opens the store under --data-dir "+dataDir+" (generation ")
	assert.Contains(t, stdout.String(), "store key written to "+keyOut+" (mode 0600)")
	fi, err := os.Stat(keyOut)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	written, err := os.ReadFile(keyOut)
	require.NoError(t, err)
	assert.NotContains(t, stdout.String(), strings.TrimSpace(string(written)), "the key is not printed when it goes to a file")

	// The same with - prints the key alone on standard output, the rest on standard error.
	var keyText, msgs bytes.Buffer
	require.NoError(t, controlplane.Recover(ctx, controlplane.RecoverConfig{
		StoreSource: controlplane.StoreSource{DataDir: dataDir}, KeyFiles: []string{testKey("x25519-a.pem"), testKey("rsa3072.pem")}, KeyOut: "-", Stdout: &keyText, Stderr: &msgs,
	}))
	assert.Equal(t, string(written), keyText.String())
	assert.NotContains(t, msgs.String(), strings.TrimSpace(string(written)))

	assert.Equal(t, before, fileSum(t, storeDB), "recover never writes to the store")

	// The control plane starts with the recovered key and serves its sessions.
	second := startWith(t, cfg)
	assert.Equal(t, bundle, second.addrs.BundlePEM, "the same CA")
	got, err := second.client(t, idDir).Get(ctx, "lost/app")
	require.NoError(t, err)
	assert.Equal(t, created.Hash, got.Hash, "the same session")
	assert.InDelta(t, 2, scrape(t, second.addrs.Metrics, "attestmesh_sessions"), 0, "the stored sessions count from the start")
	second.stop(t)
}
