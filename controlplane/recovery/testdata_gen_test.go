package recovery

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the fuzz seeds in testdata (a record and shares of the test keys)")

// TestFuzzSeeds writes, with -update, the fuzz seeds: a 2-of-3 record sealed to test keys, a
// share decrypted from it, and that share sealed to x25519-b. Without -update it checks that
// the seeds still parse and reconstruct together.
func TestFuzzSeeds(t *testing.T) {
	if *update {
		key := randomKey(t)
		r := sealTo(t, key, holders[:3], 2)
		shares := decrypt(t, r, "rsa3072", "x25519-a")
		sealed, err := shares[1].SealTo(testPublicKey(t, "x25519-b"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join("testdata", "record-2-of-3.json"), r.Marshal(), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join("testdata", "share-plain.pem"), shares[0].MarshalPEM(), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join("testdata", "share-sealed.pem"), sealed, 0o644))
	}
	r, err := ParseRecord(readTestdata(t, "record-2-of-3.json"))
	require.NoError(t, err)
	plain, _, err := ParseShares(readTestdata(t, "share-plain.pem"))
	require.NoError(t, err)
	_, sealed, err := ParseShares(readTestdata(t, "share-sealed.pem"))
	require.NoError(t, err)
	opened, err := sealed[0].Open(testPrivateKey(t, "x25519-b"))
	require.NoError(t, err)
	_, err = Combine(r, append(plain, opened))
	require.NoError(t, err, "the seeds reconstruct their (throw-away) key")
}
