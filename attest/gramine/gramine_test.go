package gramine_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/attestmesh/attestmesh/attest/gramine"
	"github.com/attestmesh/attestmesh/attest/sim"
)

// The real /dev/attestation exists only inside a Gramine SGX enclave, which this machine
// cannot run. These tests stand in for it with a directory of ordinary files laid out like
// Gramine's: attestation_type, user_report_data (written by Device, read back by the test),
// and quote, which the test fills beforehand with a real-format quote from the simulated
// platform carrying the REPORTDATA it expects. What they check is Device's side of the
// protocol: the files it writes and reads, and what it refuses.

// fakeDevice lays out a fake attestation directory whose quote carries rd.
func fakeDevice(t *testing.T, typ string, rd [64]byte) string {
	t.Helper()
	dir := t.TempDir()
	p, err := sim.NewPlatform(nil, sim.PlatformOptions{})
	require.NoError(t, err)
	quote, err := p.Quote(sim.Report{MREnclave: [32]byte{1}, ReportData: rd})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "attestation_type"), []byte(typ), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "user_report_data"), make([]byte, 64), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "quote"), quote, 0o600))
	return dir
}

func TestQuoteWritesReportDataThenReadsQuote(t *testing.T) {
	rd := [64]byte{0: 0xaa, 63: 0xbb}
	dir := fakeDevice(t, "dcap", rd)
	d, err := gramine.New(dir)
	require.NoError(t, err)
	quote, err := d.Quote(t.Context(), rd)
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(dir, "quote"))
	require.NoError(t, err)
	assert.Equal(t, want, quote)
	written, err := os.ReadFile(filepath.Join(dir, "user_report_data"))
	require.NoError(t, err)
	assert.Equal(t, rd[:], written, "the 64 bytes of REPORTDATA go to user_report_data")
}

func TestQuoteRefusesStaleReportData(t *testing.T) {
	dir := fakeDevice(t, "dcap", [64]byte{1})
	d, err := gramine.New(dir)
	require.NoError(t, err)
	_, err = d.Quote(t.Context(), [64]byte{2})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "carries REPORTDATA 0100")
	assert.Contains(t, err.Error(), "not the 0200")
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		dir  func(t *testing.T) string
		want string
	}{
		{"no enclave", func(t *testing.T) string { t.Helper(); return filepath.Join(t.TempDir(), "attestation") },
			"does not run in an SGX enclave under Gramine"},
		{"epid", func(t *testing.T) string { t.Helper(); return fakeDevice(t, "epid", [64]byte{}) },
			`attestation_type is "epid", want "dcap"`},
		{"none", func(t *testing.T) string { t.Helper(); return fakeDevice(t, "none\n", [64]byte{}) },
			`attestation_type is "none", want "dcap" (set sgx.remote_attestation = "dcap" in the manifest)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gramine.New(tt.dir(t))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestQuoteRefusesGarbage(t *testing.T) {
	dir := fakeDevice(t, "dcap", [64]byte{})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "quote"), []byte("not a quote"), 0o600))
	d, err := gramine.New(dir)
	require.NoError(t, err)
	_, err = d.Quote(t.Context(), [64]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "gramine: "+filepath.Join(dir, "quote")+": dcap:")
}

// TestConcurrentQuotes: quotes from several goroutines are made one at a time (the race
// detector watches the files' users).
func TestConcurrentQuotes(t *testing.T) {
	rd := [64]byte{7}
	d, err := gramine.New(fakeDevice(t, "dcap", rd))
	require.NoError(t, err)
	var g errgroup.Group
	for range 8 {
		g.Go(func() error { _, err := d.Quote(t.Context(), rd); return err })
	}
	require.NoError(t, g.Wait())
}
