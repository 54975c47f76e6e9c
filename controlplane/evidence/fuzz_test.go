package evidence_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
)

// FuzzParse feeds the client's evidence parser what a hostile server could send: seeded with
// real simulated evidence and, when the shared vectors are there, hardware evidence around the
// real SGX quote. Whatever parses must encode and parse again to the same evidence.
func FuzzParse(f *testing.F) {
	a, p := newAuthority(f), newPlatform(f, sim.PlatformOptions{})
	iss := newIssuer(f, a, p, sim.Report{MREnclave: ourMR})
	body, err := iss.Issue(f.Context(), [32]byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	if quote, err := os.ReadFile(filepath.Join(vectorDir, "quote_v3_ecdsa_p256_pck_chain.bin")); err == nil {
		hw, err := (&evidence.Evidence{TEE: attestapi.TEESGX, Quote: quote, CA: a.Bundle()[0]}).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(hw)
	}
	f.Add([]byte(`{"version":1,"tee":"sgx","quote":"AAAA","ca_bundle":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := evidence.Parse(data)
		if err != nil {
			return
		}
		again, err := ev.Marshal()
		if err != nil {
			t.Fatalf("parsed evidence does not encode: %v", err)
		}
		ev2, err := evidence.Parse(again)
		if err != nil {
			t.Fatalf("encoded evidence does not parse again: %v", err)
		}
		if ev2.TEE != ev.TEE || !ev2.CA.Equal(ev.CA) || string(ev2.Quote) != string(ev.Quote) {
			t.Fatal("evidence changed through encoding")
		}
	})
}
