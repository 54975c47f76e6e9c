package shamir

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowMul is the textbook definition: carry-less multiplication, then reduction by the AES
// polynomial.
func slowMul(a, b byte) byte {
	var p uint16
	for i := range 8 {
		if b&(1<<i) != 0 {
			p ^= uint16(a) << i
		}
	}
	for i := 15; i >= 8; i-- {
		if p&(1<<i) != 0 {
			p ^= 0x11b << (i - 8)
		}
	}
	return byte(p)
}

func TestFieldArithmetic(t *testing.T) {
	// FIPS-197, section 4.2: {57} • {83} = {c1} and {57} • {13} = {fe}.
	assert.Equal(t, byte(0xc1), mul(0x57, 0x83))
	assert.Equal(t, byte(0xfe), mul(0x57, 0x13))
	for a := range 256 {
		for b := range 256 {
			if got, want := mul(byte(a), byte(b)), slowMul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
	}
	assert.Equal(t, byte(0), inv(0))
	for a := 1; a < 256; a++ {
		if got := mul(byte(a), inv(byte(a))); got != 1 {
			t.Fatalf("%#x * inv(%#x) = %#x, want 1", a, a, got)
		}
	}
}

// fixedReader returns its bytes, then fails.
type fixedReader struct{ b []byte }

func (r *fixedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, fmt.Errorf("fixedReader: exhausted")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestSplitKnownAnswer(t *testing.T) {
	// k = 2, coefficient 0x01: f(x) = 0x42 + x, so f(1) = 0x43, f(2) = 0x40, f(3) = 0x41.
	// Second byte: 0x00 + 0x02 x: f(1) = 0x02, f(2) = 0x04, f(3) = 0x06.
	shares, err := Split([]byte{0x42, 0x00}, 3, 2, &fixedReader{b: []byte{0x01, 0x02}})
	require.NoError(t, err)
	assert.Equal(t, []Share{
		{X: 1, Y: []byte{0x43, 0x02}},
		{X: 2, Y: []byte{0x40, 0x04}},
		{X: 3, Y: []byte{0x41, 0x06}},
	}, shares)
}

// subsets calls f with every subset of {0, ..., n-1}.
func subsets(n int, f func(idx []int)) {
	for mask := range 1 << n {
		var idx []int
		for i := range n {
			if mask&(1<<i) != 0 {
				idx = append(idx, i)
			}
		}
		f(idx)
	}
}

func TestAnyKSharesReconstruct(t *testing.T) {
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	for _, tc := range []struct{ n, k int }{{1, 1}, {2, 1}, {2, 2}, {3, 2}, {5, 3}, {5, 5}, {7, 4}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.k, tc.n), func(t *testing.T) {
			shares, err := Split(secret, tc.n, tc.k, rand.Reader)
			require.NoError(t, err)
			require.Len(t, shares, tc.n)
			subsets(tc.n, func(idx []int) {
				if len(idx) < tc.k {
					return
				}
				pick := make([]Share, 0, len(idx))
				for _, i := range idx {
					pick = append(pick, shares[i])
				}
				got, err := Combine(pick)
				require.NoError(t, err)
				require.Equal(t, secret, got, "shares %v", idx)
			})
		})
	}
}

func TestThresholdOneSharesAreTheSecret(t *testing.T) {
	secret := []byte("thirty-two bytes of store key...")
	shares, err := Split(secret, 4, 1, rand.Reader)
	require.NoError(t, err)
	for _, s := range shares {
		assert.Equal(t, secret, s.Y)
	}
}

// TestFewerThanKRevealNothing checks the property that makes the scheme safe: with k-1 shares
// known, each of the 256 values of one more share gives a different secret byte, so every
// secret byte is consistent with the known shares and exactly one value of the missing share.
// It also checks that k-1 shares combined do not give the secret (except by the 1-in-256
// chance per byte, so over 32 bytes never in practice).
func TestFewerThanKRevealNothing(t *testing.T) {
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	for _, tc := range []struct{ n, k int }{{2, 2}, {3, 2}, {5, 3}, {6, 6}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.k, tc.n), func(t *testing.T) {
			shares, err := Split(secret, tc.n, tc.k, rand.Reader)
			require.NoError(t, err)
			known := shares[:tc.k-1]
			missing := shares[tc.k-1]
			for b := range secret {
				seen := map[byte]bool{}
				for v := range 256 {
					pick := make([]Share, 0, tc.k)
					for _, s := range known {
						pick = append(pick, Share{X: s.X, Y: []byte{s.Y[b]}})
					}
					pick = append(pick, Share{X: missing.X, Y: []byte{byte(v)}})
					got, err := Combine(pick)
					require.NoError(t, err)
					seen[got[0]] = true
				}
				require.Len(t, seen, 256, "byte %d: every secret value is consistent with %d shares", b, tc.k-1)
			}
			if tc.k > 1 {
				got, err := Combine(known)
				require.NoError(t, err)
				assert.NotEqual(t, secret, got, "k-1 shares do not give the secret")
			}
		})
	}
}

func TestSharesLookRandom(t *testing.T) {
	// Every share of a 2-of-3 split of an all-zero secret is uniformly distributed: over many
	// splits each byte value appears about equally often (a share is not a function of the
	// secret alone).
	const rounds = 64
	counts := make([]int, 256)
	secret := make([]byte, 256)
	for range rounds {
		shares, err := Split(secret, 3, 2, rand.Reader)
		require.NoError(t, err)
		for _, y := range shares[0].Y {
			counts[y]++
		}
	}
	for v, c := range counts {
		// Expected 64 per value; a binomial(16384, 1/256) (σ ≈ 8) is within 64±48 with overwhelming
		// probability.
		assert.InDelta(t, rounds, c, 48, "value %#x", v)
	}
}

func TestSplitErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret []byte
		n, k   int
		want   string
	}{
		{"empty secret", nil, 3, 2, "empty secret"},
		{"threshold zero", []byte{1}, 3, 0, "threshold 0"},
		{"threshold above n", []byte{1}, 2, 3, "threshold 3 is more than the 2 shares"},
		{"too many shares", []byte{1}, 256, 2, "256 shares: at most 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Split(tc.secret, tc.n, tc.k, rand.Reader)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := Split([]byte{1, 2}, 3, 3, &fixedReader{b: []byte{1}})
	require.Error(t, err, "a failing random source fails the split")
	assert.Contains(t, err.Error(), "random coefficients")
	_, err = Split([]byte{1}, 255, 255, rand.Reader)
	require.NoError(t, err, "255 shares is the maximum")
}

func TestCombineErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shares []Share
		want   string
	}{
		{"none", nil, "no shares"},
		{"empty", []Share{{X: 1}}, "empty share"},
		{"x zero", []Share{{X: 1, Y: []byte{1}}, {X: 0, Y: []byte{2}}}, "x = 0"},
		{"lengths differ", []Share{{X: 1, Y: []byte{1}}, {X: 2, Y: []byte{2, 3}}}, "holds 2 bytes"},
		{"duplicate x", []Share{{X: 1, Y: []byte{1}}, {X: 2, Y: []byte{2}}, {X: 1, Y: []byte{1}}}, "two shares with x=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Combine(tc.shares)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestSplitKeepsSecret(t *testing.T) {
	secret := []byte{9, 8, 7}
	orig := bytes.Clone(secret)
	_, err := Split(secret, 3, 2, rand.Reader)
	require.NoError(t, err)
	assert.Equal(t, orig, secret, "Split does not change its input")
}

func BenchmarkSplitCombine(b *testing.B) {
	secret := make([]byte, 32)
	for b.Loop() {
		shares, err := Split(secret, 5, 3, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Combine(shares[:3]); err != nil {
			b.Fatal(err)
		}
	}
}
