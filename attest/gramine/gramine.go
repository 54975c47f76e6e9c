// Package gramine quotes for a program that runs inside an SGX enclave under Gramine, through
// Gramine's /dev/attestation pseudo-files (Gramine's "low-level /dev/attestation interface"):
//
//	/dev/attestation/attestation_type   read: "none", "epid" or "dcap"
//	/dev/attestation/user_report_data   write: the 64 bytes of REPORTDATA
//	/dev/attestation/quote              read: the quote of an SGX report that carries them
//
// A quote is made by writing REPORTDATA to user_report_data and then reading quote; Gramine
// asks the platform's quoting enclave (through AESM and the DCAP quote library) for it. The
// pseudo-files hold one state per process, so Device serializes its quotes, and checks that
// the quote it read carries the REPORTDATA it wrote (another writer in the process would
// otherwise go unnoticed).
//
// Only "dcap" is accepted: attest/dcap verifies version 3 ECDSA-P256 quotes whose
// certification data is the PCK certificate chain (type 5), which the DCAP quote library
// produces when the platform's PCK certificates are provisioned (a PCCS, or Intel PCS through
// the quote provider library). The manifest must say sgx.remote_attestation = "dcap".
//
// Outside an enclave the directory does not exist, and New says so.
package gramine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

// DefaultDir is where Gramine mounts its attestation pseudo-files.
const DefaultDir = "/dev/attestation"

// ErrNoEnclave is the error of New outside a Gramine enclave (no attestation_type file).
var ErrNoEnclave = errors.New("this process does not run in an SGX enclave under Gramine")

// maxQuoteSize bounds what Quote reads: an SGX DCAP quote with its PCK chain is 5 to 8 KiB.
const maxQuoteSize = 64 << 10

// turn serializes quotes (a one-slot semaphore): the pseudo-files are one state for the whole
// process, whatever Device values point at them.
var turn = make(chan struct{}, 1)

// Device is Gramine's attestation interface under Dir. Safe for concurrent use.
type Device struct {
	dir string
}

// New opens the attestation interface under dir (DefaultDir when empty) and checks that it
// quotes with DCAP.
func New(dir string) (*Device, error) {
	if dir == "" {
		dir = DefaultDir
	}
	b, err := os.ReadFile(filepath.Join(dir, "attestation_type"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gramine: %s/attestation_type does not exist: %w", dir, ErrNoEnclave)
	}
	if err != nil {
		return nil, fmt.Errorf("gramine: %w", err)
	}
	if t := strings.TrimRight(string(b), "\x00\n "); t != "dcap" {
		return nil, fmt.Errorf("gramine: %s/attestation_type is %q, want \"dcap\" (set sgx.remote_attestation = \"dcap\" in the manifest)", dir, t)
	}
	return &Device{dir: dir}, nil
}

// Dir is the directory of the pseudo-files.
func (d *Device) Dir() string { return d.dir }

// Quote returns a DCAP quote of this enclave whose REPORTDATA is reportData. Quotes are made
// one at a time; ctx bounds the wait for the previous one (not the quoting itself, which
// Gramine does not let interrupt).
func (d *Device) Quote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	select {
	case turn <- struct{}{}:
		defer func() { <-turn }()
	case <-ctx.Done():
		return nil, fmt.Errorf("gramine: waiting for the previous quote: %w", context.Cause(ctx))
	}
	urd := filepath.Join(d.dir, "user_report_data")
	f, err := os.OpenFile(urd, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("gramine: %w", err)
	}
	n, err := f.Write(reportData[:])
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("gramine: write %s: %w", urd, err)
	}
	if n != len(reportData) {
		return nil, fmt.Errorf("gramine: write %s: wrote %d bytes, want %d", urd, n, len(reportData))
	}
	qf, err := os.Open(filepath.Join(d.dir, "quote"))
	if err != nil {
		return nil, fmt.Errorf("gramine: %w", err)
	}
	defer qf.Close()
	quote, err := io.ReadAll(io.LimitReader(qf, maxQuoteSize+1))
	if err != nil {
		return nil, fmt.Errorf("gramine: read %s: %w", qf.Name(), err)
	}
	if len(quote) > maxQuoteSize {
		return nil, fmt.Errorf("gramine: %s is larger than %d bytes", qf.Name(), maxQuoteSize)
	}
	q, err := dcap.ParseQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("gramine: %s: %w", qf.Name(), err)
	}
	if q.Body.ReportData != reportData {
		return nil, fmt.Errorf("gramine: %s carries REPORTDATA %x, not the %x just written to %s (another writer in this process?)",
			qf.Name(), q.Body.ReportData[:], reportData[:], urd)
	}
	return quote, nil
}
