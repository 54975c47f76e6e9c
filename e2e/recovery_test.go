//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

// TestRecoverLostStoreKey follows docs/operations.md, "Recovery", with the real binary and
// openssl: three holders make their recovery keys (RSA, X25519, and a passphrase-protected
// P-256 key), the control plane is installed with them and a threshold of 2, its key and
// rollback anchor are lost, and two holders bring it back with sealed shares while the third
// is away. A share alone, or a stranger's key, is refused; the control plane then serves its
// sessions again.
func TestRecoverLostStoreKey(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		e2etest.Prerequisite(t, "openssl not installed (apt-get install openssl)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	bin := e2etest.BuildAttestmesh(ctx, t)
	dir := t.TempDir()
	sh := func(script string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "sh", "-euc", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "AM="+bin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "%s\n%s", script, stderr.String())
		return stdout.String() + stderr.String()
	}

	// The holders make their keys and hand over the public halves.
	sh(`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out alice.pem 2>/dev/null
openssl pkey -in alice.pem -pubout -out alice.pub.pem
openssl genpkey -algorithm X25519 -out bob.pem
openssl pkey -in bob.pem -pubout -out bob.pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:carols-passphrase -out carol.pem
openssl pkey -in carol.pem -passin pass:carols-passphrase -pubout -out carol.pub.pem
openssl genpkey -algorithm X25519 -out dave.pem
openssl pkey -in dave.pem -pubout -out dave.pub.pem
mkdir keys && (umask 077; openssl rand -hex 32 > keys/store.key)`)
	fp := func(name string) string {
		return "sha256:" + strings.Fields(sh("openssl pkey -pubin -in " + name + ".pub.pem -outform DER | sha256sum"))[0]
	}
	fpAlice, fpBob, fpCarol := fp("alice"), fp("bob"), fp("carol")
	data := filepath.Join(dir, "data")
	keyFile := filepath.Join(dir, "keys", "store.key")
	recoveryFlags := []string{"--recovery-key", filepath.Join(dir, "alice.pub.pem"), "--recovery-key", filepath.Join(dir, "bob.pub.pem"),
		"--recovery-key", filepath.Join(dir, "carol.pub.pem"), "--recovery-threshold", "2"}

	cp := runControlPlane(ctx, t, bin, data, append([]string{"--store-key-file", keyFile}, recoveryFlags...)...)
	require.Contains(t, cp.log(), "recovery record sealed: the store key is now also sealed to the recovery keys")
	identity := filepath.Join(dir, "identity")
	client := []string{"--controlplane", "https://" + cp.mgmt, "--ca-file", filepath.Join(data, "ca.pem"), "--identity-dir", identity}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ns.yaml"), []byte("name: lost\nversion: \"0.3\"\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(`name: lost/app
version: "0.3"
secrets:
  - {name: password, kind: ascii, size: 16}
`), 0o600))
	for _, f := range []string{"ns.yaml", "app.yaml"} {
		code, _, stderr := runBin(ctx, t, bin, append([]string{"session", "create", "-f", filepath.Join(dir, f)}, client...)...)
		require.Equal(t, 0, code, stderr)
	}
	code, before, stderr := runBin(ctx, t, bin, append([]string{"session", "get", "lost/app"}, client...)...)
	require.Equal(t, 0, code, stderr)
	cp.stop()
	assert.NotContains(t, cp.log(), strings.TrimSpace(string(mustRead(t, keyFile))), "the store key is never logged")

	// The key Secret is lost, and the anchor with it.
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "keys")))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "keys"), 0o700))

	// Whoever reaches the store exports the record and makes a key for the shares' way back.
	out := sh(`"$AM" recover record --data-dir data --out record.json
openssl genpkey -algorithm X25519 -out combine.pem
openssl pkey -in combine.pem -pubout -out combine.pub.pem`)
	assert.Contains(t, out, "2 of 3 shares, from the keys "+fpAlice+" (share 1), "+fpBob+" (share 2), "+fpCarol+" (share 3)")
	// Alice and Carol (her key decrypted into the pipe only) make their sealed shares; Bob is away.
	out = sh(`"$AM" recover share --record record.json --key alice.pem --to combine.pub.pem --out alice.share`)
	assert.Contains(t, out, "share 1 of recovery record")
	out = sh(`openssl pkey -in carol.pem -passin pass:carols-passphrase | "$AM" recover share --record record.json --key - --to combine.pub.pem > carol.share`)
	assert.Contains(t, out, "share 3 of recovery record")
	assert.Contains(t, string(mustRead(t, filepath.Join(dir, "carol.share"))), "-----BEGIN ATTESTMESH SEALED RECOVERY SHARE-----")

	recoverArgs := func(extra ...string) []string {
		return append([]string{"recover", "--data-dir", data, "--key-out", keyFile}, extra...)
	}
	code, _, stderr = runBin(ctx, t, bin, recoverArgs("--key", filepath.Join(dir, "combine.pem"), "--share", filepath.Join(dir, "alice.share"))...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "needs 2 of its 3 shares, and 1 was given: share 1 ("+fpAlice+"); 1 more from the keys "+fpBob+" (share 2), "+fpCarol+" (share 3)")
	code, _, stderr = runBin(ctx, t, bin, recoverArgs("--key", filepath.Join(dir, "dave.pem"), "--key", filepath.Join(dir, "alice.pem"))...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "the key "+fp("dave")+" is neither one of the record's recovery keys")
	assert.NoFileExists(t, keyFile)

	code, stdout, stderr := runBin(ctx, t, bin, recoverArgs("--key", filepath.Join(dir, "combine.pem"),
		"--share", filepath.Join(dir, "alice.share"), "--share", filepath.Join(dir, "carol.share"))...)
	require.Equal(t, 0, code, stderr)
	t.Logf("attestmesh recover:\n%s", stdout)
	assert.Contains(t, stdout, "store key written to "+keyFile+" (mode 0600)")
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// The anchor went with the key: the control plane says so, and starts once told.
	code, _, stderr = runBin(ctx, t, bin, append([]string{"controlplane", "--data-dir", data, "--store-key-file", keyFile,
		"--mgmt-addr", "127.0.0.1:0", "--attest-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, recoveryFlags...)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "records none: the anchor was lost or reset")
	cp = runControlPlane(ctx, t, bin, data, append([]string{"--store-key-file", keyFile, "--allow-store-rollback"}, recoveryFlags...)...)
	assert.Contains(t, cp.log(), "recovery record current")
	client[1] = "https://" + cp.mgmt
	code, after, stderr := runBin(ctx, t, bin, append([]string{"session", "get", "lost/app"}, client...)...)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, before, after, "the same session, served again")
	cp.stop()
}

// cpRun is a control plane process of the recovery test.
type cpRun struct {
	mgmt string
	out  *proxytest.SyncBuffer
	stop func()
}

func (c *cpRun) log() string { return c.out.String() }

// runControlPlane starts `attestmesh controlplane` on data with args and free loopback ports,
// and waits until its management API accepts connections.
func runControlPlane(ctx context.Context, t *testing.T, bin, data string, args ...string) *cpRun {
	t.Helper()
	c := &cpRun{mgmt: freeLoopbackAddr(ctx, t), out: &proxytest.SyncBuffer{}}
	cmd := exec.Command(bin, append([]string{"controlplane", "--data-dir", data, //nolint:noctx // stopped below or in cleanup
		"--mgmt-addr", c.mgmt, "--attest-addr", freeLoopbackAddr(ctx, t), "--xds-addr", freeLoopbackAddr(ctx, t), "--metrics-addr", freeLoopbackAddr(ctx, t)}, args...)...)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("--- control plane log ---\n%s", c.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			require.Fail(t, "the control plane exited", "%s", c.out.String())
		case <-ctx.Done():
			require.NoError(t, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		var d net.Dialer
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		conn, err := d.DialContext(dctx, "tcp", c.mgmt)
		dcancel()
		if err == nil {
			_ = conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			require.NoError(t, errors.Join(errors.New("not serving within 30 s"), err), "%s", c.out.String())
		}
	}
}
