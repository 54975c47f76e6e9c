package dcap

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// vectorDir holds the real Intel SGX DCAP vectors (public data from oasis-core). They are
// shared by the project and deliberately not copied into this repository.
const vectorDir = "../../../shared/testdata/sgx-dcap"

// Known times for the vectors (see vectorDir/README.md).
const (
	validAt          = 1671497404 // everything valid
	pckExpiredAt     = 1891163522 // the PCK certificate has expired
	pckNotYetValidAt = 1670238720 // the PCK certificate is not yet valid
	qeIssuedAt       = 1671194736 // QE Identity issueDate (nextUpdate is 30 days later)
)

type vectors struct {
	quote, eppid        []byte
	tcbInfo, qeIdentity []byte
	tcbChain, badChain  []byte
	rootPEM             []byte
}

// loadVectors reads the real vectors, or skips the test when the shared folder is absent.
func loadVectors(tb testing.TB) *vectors {
	tb.Helper()
	if _, err := os.Stat(vectorDir); err != nil {
		tb.Skipf("real SGX DCAP vectors not available at %s (%v): skipping", vectorDir, err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vectorDir, name))
		require.NoError(tb, err)
		return b
	}
	return &vectors{
		quote:      read("quote_v3_ecdsa_p256_pck_chain.bin"),
		eppid:      read("quote_v3_ecdsa_p256_eppid.bin"),
		tcbInfo:    read("tcb_info_v3_fmspc_00606A000000.json"),
		qeIdentity: read("qe_identity_v2.json"),
		tcbChain:   read("tcb_info_v3_fmspc_00606A000000_certs.pem"),
		badChain:   read("tcb_info_v3_fmspc_00606A000000_certs_bad.pem"),
		rootPEM:    read("intel_sgx_root_ca.pem"),
	}
}

func (v *vectors) collateral() Collateral {
	return Collateral{TCBInfo: v.tcbInfo, QEIdentity: v.qeIdentity, TCBSignChain: v.tcbChain}
}
