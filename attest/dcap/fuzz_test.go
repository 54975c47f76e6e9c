package dcap

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// addVectorSeeds adds the real quotes as seeds when the shared vectors are present; the
// committed corpus in testdata/fuzz holds them too.
func addVectorSeeds(f *testing.F) {
	f.Helper()
	for _, name := range []string{"quote_v3_ecdsa_p256_pck_chain.bin", "quote_v3_ecdsa_p256_eppid.bin", "quote_v4_tdx_ecdsa_p256.bin"} {
		if b, err := os.ReadFile(filepath.Join(vectorDir, name)); err == nil {
			f.Add(b)
		}
	}
}

// FuzzParseQuote: any input either parses into a quote that marshals and parses back to the
// same value, or gives a Malformed or Unsupported error with the package prefix.
func FuzzParseQuote(f *testing.F) {
	addVectorSeeds(f)
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize+ReportBodySize+4))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			require.Nil(t, q)
			r := ReasonOf(err)
			require.True(t, r == ReasonMalformed || r == ReasonUnsupported, "reason %q: %v", r, err)
			require.Regexp(t, "^dcap: quote: ", err.Error())
			return
		}
		again, err := ParseQuote(q.Marshal())
		require.NoError(t, err)
		require.Equal(t, q, again)
	})
}

// FuzzVerify runs the whole verifier on mutated quotes with the real collateral: it must
// never panic, and anything but the untouched quote must be refused with a Reason.
func FuzzVerify(f *testing.F) {
	v := loadVectors(f)
	f.Add(v.quote)
	f.Add(v.eppid)
	c := v.collateral()
	opts := Options{Root: IntelRoot(), Now: time.Unix(validAt, 0), SkipRevocation: true}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := Verify(b, c, opts)
		if err == nil {
			assert.Equal(t, wantMREnclave, id.MREnclave.String())
			return
		}
		assert.Nil(t, id)
		assert.NotEqual(t, ReasonUnknown, ReasonOf(err), "error without a reason: %v", err)
	})
}
