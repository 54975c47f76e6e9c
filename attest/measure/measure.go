// Package measure computes simulated enclave measurements.
//
// The simulated MRENCLAVE of a workload is SHA-256 over the bytes of its binary, after
// following symlinks: `attestmesh measure BINARY` equals `sha256sum $(readlink -f BINARY)`.
package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
)

// MREnclave is a 32-byte enclave measurement.
type MREnclave [32]byte

// Hex returns the lower-case hex form used in sessions.
func (m MREnclave) Hex() string { return hex.EncodeToString(m[:]) }

// File measures the file at path, following symlinks. It returns the measurement and
// fails if the resolved path is not a regular file.
func File(path string) (MREnclave, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return MREnclave{}, fmt.Errorf("measure: %w", err)
	}
	f, err := os.Open(resolved)
	if err != nil {
		return MREnclave{}, fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return MREnclave{}, fmt.Errorf("measure: %w", err)
	}
	if !st.Mode().IsRegular() {
		return MREnclave{}, fmt.Errorf("measure: %s (resolved from %s) is not a regular file", resolved, path)
	}
	return hash(f, resolved)
}

func hash(r io.Reader, name string) (MREnclave, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return MREnclave{}, fmt.Errorf("measure: reading %s: %w", name, err)
	}
	var m MREnclave
	copy(m[:], h.Sum(nil))
	return m, nil
}

// Running measures the executable this process runs: on Linux the file behind /proc/self/exe,
// which stays the running program's bytes even when its path has since been replaced (an
// upgrade in place); elsewhere Self. It equals File of the binary's path as long as nobody
// replaced it.
func Running() (MREnclave, error) {
	if runtime.GOOS != "linux" {
		return Self()
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return MREnclave{}, fmt.Errorf("measure: the running executable: %w", err)
	}
	defer f.Close()
	return hash(f, "/proc/self/exe")
}

// Self measures the running executable.
func Self() (MREnclave, error) {
	exe, err := os.Executable()
	if err != nil {
		return MREnclave{}, fmt.Errorf("measure: %w", err)
	}
	return File(exe)
}
