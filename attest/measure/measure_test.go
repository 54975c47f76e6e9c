package measure_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/measure"
)

// TestFileEqualsSha256sumOfResolvedFile checks the documented definition: the simulated
// MRENCLAVE of a binary is what sha256sum prints for the file its path resolves to.
func TestFileEqualsSha256sumOfResolvedFile(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum (coreutils) not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho measured\n"), 0o755))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(bin, link))
	link2 := filepath.Join(dir, "link2")
	require.NoError(t, os.Symlink("link", link2))

	out, err := exec.CommandContext(t.Context(), "sha256sum", bin).Output()
	require.NoError(t, err)
	want := strings.Fields(string(out))[0]

	for _, p := range []string{bin, link, link2} {
		m, err := measure.File(p)
		require.NoError(t, err, p)
		assert.Equal(t, want, m.Hex(), p)
	}

	// A different byte is a different measurement.
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho measureD\n"), 0o755))
	m, err := measure.File(link2)
	require.NoError(t, err)
	assert.NotEqual(t, want, m.Hex())
}

func TestFileRefusals(t *testing.T) {
	dir := t.TempDir()
	_, err := measure.File(filepath.Join(dir, "missing"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no such file")

	_, err = measure.File(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not a regular file")

	dangling := filepath.Join(dir, "dangling")
	require.NoError(t, os.Symlink(filepath.Join(dir, "nowhere"), dangling))
	_, err = measure.File(dangling)
	require.Error(t, err)
}

// TestRunningEqualsSelf: the running test binary, measured through /proc/self/exe, is the
// file its path names (nobody replaced it).
func TestRunningEqualsSelf(t *testing.T) {
	running, err := measure.Running()
	require.NoError(t, err)
	self, err := measure.Self()
	require.NoError(t, err)
	assert.Equal(t, self, running)
}
