package launch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/attest/measure"
)

// These tests run the real launcher: the test binary re-executes itself as stage 2 (TestMain
// calls MaybeStage2), which makes the mount namespace and the tmpfs mounts and execs /bin/sh as
// the application. The Attestor is a fake (a function); the real attestation path is covered by
// the control plane's integration tests.

func TestMain(m *testing.M) {
	MaybeStage2(fakeFSPF)
	goleak.VerifyTestMain(m)
}

const fakeFSPFKey = "fake-fspf-key"

// fakeFSPF stands in for attest/fspf (written concurrently, with its own tests): the "ciphertext"
// of each file is its base64, the key must match, and the tag is SHA-256 over the sorted names and
// plaintexts, so that a changed byte, an added or a removed file is a tag mismatch.
func fakeFSPF(dir, key, tag string) (PlaintextTree, error) {
	if key != fakeFSPFKey {
		return nil, errors.New("wrong key")
	}
	tree, got, err := fakeDecrypt(dir)
	if err != nil {
		return nil, err
	}
	if got != tag {
		return nil, fmt.Errorf("tag mismatch: the tree's tag is %s, the session expects %s", got, tag)
	}
	return tree, nil
}

type fakeTree map[string][]byte

func (ft fakeTree) Materialize(root string) error {
	for name, content := range ft {
		if err := os.WriteFile(filepath.Join(root, name), content, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func fakeDecrypt(dir string) (fakeTree, string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", err
	}
	tree := fakeTree{}
	h := sha256.New()
	for _, e := range entries { // sorted by name
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, "", err
		}
		plain, err := base64.StdEncoding.DecodeString(string(b))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", e.Name(), err)
		}
		tree[e.Name()] = plain
		fmt.Fprintf(h, "%q %q\n", e.Name(), plain)
	}
	return tree, hex.EncodeToString(h.Sum(nil)), nil
}

// fakeEncrypt writes files as the fake fspf's ciphertext and returns the tag.
func fakeEncrypt(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(base64.StdEncoding.EncodeToString([]byte(content))), 0o644))
	}
	_, tag, err := fakeDecrypt(dir)
	require.NoError(t, err)
	return tag
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the launcher's tests create mount namespaces and tmpfs mounts")
	}
}

// testDir returns a fresh directory under /tmp whose cleanup also checks that nothing is left
// mounted below it.
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "attestmesh-test-")
	require.NoError(t, err)
	t.Cleanup(func() {
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if assert.NoError(t, err) {
			assert.NotContains(t, string(mi), d, "a mount leaked into the host's namespace")
		}
		assert.NoError(t, os.RemoveAll(d))
	})
	return d
}

type result struct {
	code   int
	err    error
	stdout string
	stderr string
	logs   string
}

// launch runs the launcher on /bin/sh with cfg, from a fake attestor.
func launch(ctx context.Context, t *testing.T, cfg *Config, opts Options) result {
	t.Helper()
	var stdout, stderr, logs bytes.Buffer
	if opts.ConfigID == "" {
		opts.ConfigID = "test-session/app"
	}
	if opts.Binary == "" {
		opts.Binary = "/bin/sh"
	}
	if opts.Attestor == nil {
		opts.Attestor = AttestorFunc(func(context.Context, Request) (*Config, error) { return cfg, nil })
	}
	opts.Stdout, opts.Stderr = &stdout, &stderr
	opts.Stdin = strings.NewReader("")
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 5 * time.Second
	}
	code, err := Run(ctx, opts)
	return result{code: code, err: err, stdout: stdout.String(), stderr: stderr.String(), logs: logs.String()}
}

// section returns the lines of out between "==NAME==" and the next "==" line.
func section(out, name string) []string {
	var lines []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "==") {
			in = l == "=="+name+"=="
			continue
		}
		if in {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestLaunchInjectsFilesEnvAndDir(t *testing.T) {
	needRoot(t)
	for _, iso := range []Isolation{IsolationMountNS, IsolationUserNS, IsolationAuto} {
		t.Run(iso.String(), func(t *testing.T) {
			t.Setenv("ATTESTMESH_HOST_MARKER", "must-not-leak")
			base := testDir(t)
			tls := filepath.Join(base, "new", "tls") // missing: created and removed again
			hostDir := filepath.Join(base, "secrets")
			require.NoError(t, os.Mkdir(hostDir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(hostDir, "host-file"), []byte("host"), 0o644))
			work := filepath.Join(base, "work")
			require.NoError(t, os.Mkdir(work, 0o755))

			cert := "-----BEGIN CERTIFICATE-----\nMIIB-test\n-----END CERTIFICATE-----"
			key := "-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----"
			script := fmt.Sprintf(`echo ==crt==; cat %[1]s/a.crt; echo
echo ==key==; cat %[1]s/sub/a.key; echo
echo ==modes==; stat -c '%%a %%n' %[1]s %[1]s/a.crt %[1]s/sub/a.key %[2]s/token
echo ==hostdir==; ls -A %[2]s
echo ==env==; tr '\0' '\n' < /proc/$$/environ
echo ==args==; printf '%%s\n' "$0" "$@"
echo ==pwd==; pwd
echo ==capbnd==; grep '^CapBnd' /proc/$$/status
echo ==end==`, tls, hostDir)
			cfg := &Config{
				Argv: []string{"sh", "-c", script, "app-name", "arg one", "--flag"},
				Env:  map[string]string{"PATH": "/usr/bin:/bin", "APP_MODE": "test", "EMPTY": ""},
				Dir:  work,
				Files: map[string][]byte{
					tls + "/a.crt":     []byte(cert),
					tls + "/sub/a.key": []byte(key),
					hostDir + "/token": []byte("tok"),
				},
			}
			var got Request
			attestor := AttestorFunc(func(_ context.Context, req Request) (*Config, error) {
				got = req
				return cfg, nil
			})

			r := launch(t.Context(), t, cfg, Options{Attestor: attestor, Isolation: iso})
			require.NoError(t, r.err, "stderr: %s\nlogs: %s", r.stderr, r.logs)
			require.Equal(t, 0, r.code, "stderr: %s", r.stderr)

			want, err := measure.File("/bin/sh")
			require.NoError(t, err)
			assert.Equal(t, [32]byte(want), got.MREnclave)
			assert.Equal(t, "test-session/app", got.ConfigID)
			assert.NotNil(t, got.Key)

			assert.Equal(t, []string{strings.Split(cert, "\n")[0], "MIIB-test", "-----END CERTIFICATE-----"}, section(r.stdout, "crt"))
			assert.Equal(t, strings.Split(key, "\n"), section(r.stdout, "key"))
			assert.Equal(t, []string{
				"700 " + tls, "600 " + tls + "/a.crt", "600 " + tls + "/sub/a.key", "600 " + hostDir + "/token",
			}, section(r.stdout, "modes"))
			assert.Equal(t, []string{"token"}, section(r.stdout, "hostdir"), "the tmpfs hides the host's directory contents")
			env := section(r.stdout, "env")
			sort.Strings(env)
			assert.Equal(t, []string{"APP_MODE=test", "EMPTY=", "PATH=/usr/bin:/bin"}, env, "exactly the policy's environment")
			assert.Equal(t, []string{"app-name", "arg one", "--flag"}, section(r.stdout, "args"))
			assert.Equal(t, []string{work}, section(r.stdout, "pwd"))
			bnd := section(r.stdout, "capbnd")
			require.Len(t, bnd, 1)
			mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(bnd[0], "CapBnd:")), 16, 64)
			require.NoError(t, err, bnd[0])
			assert.Zero(t, mask&(1<<capSysAdmin), "CAP_SYS_ADMIN, which the namespace needed, is out of the app's bounding set: %s", bnd[0])
			assert.NotZero(t, mask&(1<<12), "other capabilities stay (CAP_NET_ADMIN): %s", bnd[0])

			// The host never saw the files; the created mount points are gone, the host's
			// directory is intact.
			assert.NoFileExists(t, filepath.Join(hostDir, "token"))
			assert.FileExists(t, filepath.Join(hostDir, "host-file"))
			assert.NoDirExists(t, filepath.Join(base, "new"))
			assert.NotContains(t, r.logs, "secret-key-bytes")
			assert.NotContains(t, r.logs, "MIIB-test")
			assert.Contains(t, r.logs, "isolation="+map[Isolation]string{
				IsolationMountNS: "mount-namespace", IsolationUserNS: "user+mount-namespace", IsolationAuto: "mount-namespace",
			}[iso])
		})
	}
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := os.Stat(path)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the application did not create %s", path)
}

func TestLaunchFilesInvisibleOutsideAndSignalsForwarded(t *testing.T) {
	needRoot(t)
	base := testDir(t)
	tls := filepath.Join(base, "tls")
	ready := filepath.Join(base, "ready")
	secret := "only-for-the-app"
	cfg := &Config{
		// The trap ends the background sleep so that nothing outlives the test.
		Argv: []string{"/bin/sh", "-c", `trap 'kill $p; exit 7' TERM; sleep 30 & p=$!; : > ` + ready + `; wait $p`},
		Env:  map[string]string{"PATH": "/usr/bin:/bin"},
		Files: map[string][]byte{
			tls + "/a.crt": []byte(secret),
		},
	}
	sigs := make(chan os.Signal, 1)
	pids := make(chan int, 1)
	done := make(chan result, 1)
	go func() {
		done <- launch(t.Context(), t, cfg, Options{Signals: sigs, OnStart: func(pid int) { pids <- pid }})
	}()
	var pid int
	select {
	case pid = <-pids:
	case r := <-done:
		t.Fatalf("launch ended early: %v, %s", r.err, r.stderr)
	}
	waitFile(t, ready)

	// Outside the namespace: no file, no mount.
	assert.NoFileExists(t, filepath.Join(tls, "a.crt"))
	entries, err := os.ReadDir(tls)
	require.NoError(t, err)
	assert.Empty(t, entries, "the host sees only the empty mount point")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mi), tls)

	// Inside: the application (the launcher's child, same PID after exec) sees it. Root can look
	// through /proc/PID/root, as root can read the application's memory.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(cmdline), "/bin/sh\x00-c\x00trap"), "PID %d runs the app: %q", pid, cmdline)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/a.crt", pid, tls))
	require.NoError(t, err)
	assert.Equal(t, secret, string(b))
	ourNS, err := os.Readlink("/proc/self/ns/mnt")
	require.NoError(t, err)
	appNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	require.NoError(t, err)
	assert.NotEqual(t, ourNS, appNS)

	sigs <- syscall.SIGTERM
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the application did not exit after SIGTERM")
	}
	require.NoError(t, r.err)
	assert.Equal(t, 7, r.code, "the trap ran: SIGTERM was forwarded")
	assert.Contains(t, r.logs, "forwarding signal")
	assert.NoDirExists(t, tls, "the created mount point is removed")
}

func TestLaunchExitCodes(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name   string
		script string
		want   int
	}{
		{name: "success", script: "exit 0", want: 0},
		{name: "exit status", script: "exit 3", want: 3},
		{name: "killed by a signal", script: "kill -KILL $$", want: 128 + 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := launch(t.Context(), t, &Config{Argv: []string{"/bin/sh", "-c", tt.script}}, Options{})
			require.NoError(t, r.err)
			assert.Equal(t, tt.want, r.code)
		})
	}
}

func TestLaunchContextCancelStopsTheApp(t *testing.T) {
	needRoot(t)
	base := testDir(t)
	ready := filepath.Join(base, "ready")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := &Config{
		Argv:  []string{"/bin/sh", "-c", `trap 'kill $p; exit 5' TERM; sleep 30 & p=$!; : > ` + ready + `; wait $p`},
		Env:   map[string]string{"PATH": "/usr/bin:/bin"},
		Files: map[string][]byte{base + "/tls/x": []byte("x")},
	}
	done := make(chan result, 1)
	go func() { done <- launch(ctx, t, cfg, Options{Signals: make(chan os.Signal)}) }()
	waitFile(t, ready)
	cancel()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		assert.Equal(t, 5, r.code, "the application got SIGTERM")
	case <-time.After(15 * time.Second):
		t.Fatal("the application did not stop")
	}
}

func TestLaunchFSPF(t *testing.T) {
	needRoot(t)
	base := testDir(t)
	app := filepath.Join(base, "app")
	tag := fakeEncrypt(t, app, map[string]string{"main.py": "print('plaintext code')", "data.txt": "records"})
	cfg := &Config{
		Argv: []string{"/bin/sh", "-c", "cat main.py; echo; cat data.txt; echo; stat -c '%a' ."},
		Env:  map[string]string{"PATH": "/usr/bin:/bin"},
		Dir:  app,
		FSPF: &FSPF{Path: app, Key: fakeFSPFKey, Tag: tag},
	}
	r := launch(t.Context(), t, cfg, Options{})
	require.NoError(t, r.err, "stderr: %s", r.stderr)
	assert.Equal(t, "print('plaintext code')\nrecords\n700\n", r.stdout)
	b, err := os.ReadFile(filepath.Join(app, "main.py"))
	require.NoError(t, err)
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("print('plaintext code')")), string(b),
		"the host still has only the ciphertext")
}

func TestLaunchRefusals(t *testing.T) {
	needRoot(t)
	base := testDir(t)
	marker := filepath.Join(base, "started")
	app := filepath.Join(base, "app")
	tag := fakeEncrypt(t, app, map[string]string{"main.py": "code"})
	tampered := filepath.Join(base, "tampered")
	fakeEncrypt(t, tampered, map[string]string{"main.py": "code", "extra.py": "added"})
	runs := []string{"/bin/sh", "-c", ": > " + marker}

	tests := []struct {
		name     string
		cfg      Config
		attestor Attestor
		binary   string
		wantErr  string
	}{
		{
			name: "attestation refused",
			attestor: AttestorFunc(func(context.Context, Request) (*Config, error) {
				return nil, errors.New("mrenclave mismatch: got 1234, session allows [abcd]")
			}),
			wantErr: `launch: attestation of "test-session/app" refused: mrenclave mismatch: got 1234, session allows [abcd]`,
		},
		{
			name:    "policy command is another binary",
			cfg:     Config{Argv: []string{"/usr/bin/env", "sh", "-c", ": > " + marker}},
			wantErr: `launch: policy command "/usr/bin/env" (resolves to "/usr/bin/env") is not the measured binary`,
		},
		{
			name:    "binary does not exist",
			binary:  filepath.Join(base, "missing"),
			cfg:     Config{Argv: runs},
			wantErr: "launch: binary",
		},
		{
			name:    "fspf tag mismatch",
			cfg:     Config{Argv: runs, FSPF: &FSPF{Path: tampered, Key: fakeFSPFKey, Tag: tag}},
			wantErr: "launch: refusing to start the application: fspf " + tampered + ": tag mismatch",
		},
		{
			name:    "fspf wrong key",
			cfg:     Config{Argv: runs, FSPF: &FSPF{Path: app, Key: "other", Tag: tag}},
			wantErr: "launch: refusing to start the application: fspf " + app + ": wrong key",
		},
		{
			name:    "working directory missing",
			cfg:     Config{Argv: runs, Dir: filepath.Join(base, "nowhere"), Files: map[string][]byte{base + "/tls/a": []byte("a")}},
			wantErr: "launch: refusing to start the application: working directory: chdir " + filepath.Join(base, "nowhere"),
		},
		{
			name:    "injection file collides with a mount",
			cfg:     Config{Argv: runs, Files: map[string][]byte{base + "/d/f": []byte("a"), base + "/d": []byte("b")}},
			wantErr: "launch: injection file \"" + base + "/d\" is also the directory of \"" + base + "/d/f\"",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := launch(t.Context(), t, &tt.cfg, Options{Attestor: tt.attestor, Binary: tt.binary})
			require.Error(t, r.err)
			assert.Contains(t, r.err.Error(), tt.wantErr)
			assert.Equal(t, -1, r.code)
			assert.NoFileExists(t, marker, "the application must not have started")
		})
	}
	// The host's encrypted tree is untouched by the refusals.
	assert.NoDirExists(t, filepath.Join(base, "tls"))
}

const unprivilegedEnv = "ATTESTMESH_LAUNCH_TEST_UNPRIVILEGED_DIR"

// TestLaunchUnprivilegedFallback runs TestUnprivilegedLaunch in a copy of this test binary as
// user nobody: without CAP_SYS_ADMIN the private mount namespace is refused (EPERM) and the
// launcher must fall back to a user and mount namespace, or refuse.
func TestLaunchUnprivilegedFallback(t *testing.T) {
	needRoot(t)
	base := testDir(t)
	require.NoError(t, os.Chmod(base, 0o755))
	self, err := os.Executable()
	require.NoError(t, err)
	bin, err := os.ReadFile(self)
	require.NoError(t, err)
	copied := filepath.Join(base, "launch.test")
	require.NoError(t, os.WriteFile(copied, bin, 0o755))
	work := filepath.Join(base, "work")
	require.NoError(t, os.Mkdir(work, 0o777))
	require.NoError(t, os.Chmod(work, 0o777)) // whatever the umask

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, copied, "-test.run=^TestUnprivilegedLaunch$", "-test.v", "-test.count=1")
	cmd.Env = []string{unprivilegedEnv + "=" + work, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "cannot hide the injected files from the host, refusing to start") {
		t.Skipf("unprivileged user namespaces are not available here; the launcher refused as it must:\n%s", out)
	}
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "--- PASS: TestUnprivilegedLaunch")
	assert.Contains(t, string(out), "isolation=user+mount-namespace")
}

// TestUnprivilegedLaunch is run by TestLaunchUnprivilegedFallback, as nobody.
func TestUnprivilegedLaunch(t *testing.T) {
	work := os.Getenv(unprivilegedEnv)
	if work == "" {
		t.Skip("run by TestLaunchUnprivilegedFallback only")
	}
	require.NotEqual(t, 0, os.Geteuid(), "must run unprivileged")
	tls := filepath.Join(work, "tls")
	cfg := &Config{
		Argv: []string{"/bin/sh", "-c", "cat " + tls + "/a.crt; stat -c ' %a %u' " + tls + "/a.crt; id -u; " +
			"grep -E '^Cap(Eff|Amb)' /proc/$$/status"},
		Env:   map[string]string{"PATH": "/usr/bin:/bin"},
		Files: map[string][]byte{tls + "/a.crt": []byte("unprivileged")},
	}
	r := launch(t.Context(), t, cfg, Options{})
	t.Log(r.logs)
	require.NoError(t, r.err, "stderr: %s", r.stderr)
	assert.Equal(t, fmt.Sprintf("unprivileged 600 %d\n%d\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n",
		os.Geteuid(), os.Geteuid()), r.stdout, "the app runs as the caller's uid, without capabilities, and sees its file")
	assert.NoFileExists(t, filepath.Join(tls, "a.crt"))
	assert.NoDirExists(t, tls)
}
