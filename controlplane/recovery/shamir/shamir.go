// Package shamir splits a secret into n shares of which any k reconstruct it, and fewer than k
// reveal nothing about it: Shamir's secret sharing over GF(2^8), byte by byte.
//
// Each byte of the secret is the constant term of its own random polynomial of degree k-1 over
// GF(2^8) (the AES field, modulo x^8 + x^4 + x^3 + x + 1); share i holds the value of every
// polynomial at x = i (1 to n; 0 would be the secret itself). Any k points determine a polynomial
// of degree k-1, so k shares give the secret back by Lagrange interpolation at 0. For any k-1
// shares and any candidate secret there is exactly one polynomial through them, so k-1 shares
// are consistent with every secret alike.
//
// The field arithmetic takes the same time whatever the values (no log tables, no branches on
// secret bytes), so shares and secrets do not leak through cache or branch timing.
package shamir

import (
	"errors"
	"fmt"
	"io"
)

// MaxShares is the largest n: x runs over the 255 non-zero elements of GF(2^8).
const MaxShares = 255

// Share is one share of a secret: the point X (1 to 255) and the value of every byte's
// polynomial there, as long as the secret.
type Share struct {
	X byte
	Y []byte
}

// Split splits secret into n shares, any k of which reconstruct it (1 <= k <= n <= MaxShares).
// Share i (0-based) has X = i+1. random supplies the polynomials' coefficients (crypto/rand's
// Reader; a test may pass a deterministic one). With k = 1 every share is the secret itself.
func Split(secret []byte, n, k int, random io.Reader) ([]Share, error) {
	switch {
	case len(secret) == 0:
		return nil, errors.New("shamir: empty secret")
	case k < 1:
		return nil, fmt.Errorf("shamir: threshold %d: want at least 1", k)
	case n < k:
		return nil, fmt.Errorf("shamir: threshold %d is more than the %d shares", k, n)
	case n > MaxShares:
		return nil, fmt.Errorf("shamir: %d shares: at most %d", n, MaxShares)
	}
	// coeffs[j*(k-1)+d] is the coefficient of x^(d+1) of byte j's polynomial.
	coeffs := make([]byte, len(secret)*(k-1))
	defer clear(coeffs)
	if _, err := io.ReadFull(random, coeffs); err != nil {
		return nil, fmt.Errorf("shamir: random coefficients: %w", err)
	}
	shares := make([]Share, n)
	for i := range shares {
		x := byte(i + 1)
		y := make([]byte, len(secret))
		for j, s := range secret {
			// Horner: ((c_{k-1} x + c_{k-2}) x + ... + c_1) x + s.
			var v byte
			for d := k - 2; d >= 0; d-- {
				v = mul(v, x) ^ coeffs[j*(k-1)+d]
			}
			y[j] = mul(v, x) ^ s
		}
		shares[i] = Share{X: x, Y: y}
	}
	return shares, nil
}

// Combine reconstructs the secret from shares by interpolation at 0. It needs at least the
// threshold the secret was split with; fewer give a wrong value that nothing here can tell from
// the right one (the caller checks the result). More than the threshold give the same secret.
// Shares must have distinct non-zero X and equally long Y.
func Combine(shares []Share) ([]byte, error) {
	if len(shares) == 0 {
		return nil, errors.New("shamir: no shares")
	}
	size := len(shares[0].Y)
	if size == 0 {
		return nil, errors.New("shamir: empty share")
	}
	for i, s := range shares {
		if s.X == 0 {
			return nil, fmt.Errorf("shamir: share %d has x = 0", i)
		}
		if len(s.Y) != size {
			return nil, fmt.Errorf("shamir: share x=%d holds %d bytes, share x=%d holds %d", s.X, len(s.Y), shares[0].X, size)
		}
		for _, o := range shares[:i] {
			if o.X == s.X {
				return nil, fmt.Errorf("shamir: two shares with x=%d", s.X)
			}
		}
	}
	secret := make([]byte, size)
	for i, si := range shares {
		// The Lagrange basis polynomial of share i at 0: the product over j != i of
		// x_j / (x_j - x_i); subtraction is XOR in GF(2^8).
		num, den := byte(1), byte(1)
		for j, sj := range shares {
			if j == i {
				continue
			}
			num = mul(num, sj.X)
			den = mul(den, sj.X^si.X)
		}
		l := mul(num, inv(den))
		for b := range secret {
			secret[b] ^= mul(l, si.Y[b])
		}
	}
	return secret, nil
}

// mul multiplies in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, in constant time.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)       // add a when b's low bit is set
		a = a<<1 ^ 0x1b&-(a>>7) // a *= x, reduced when x^8 appears
		b >>= 1
	}
	return p
}

// inv returns the multiplicative inverse a^254 (a^255 = 1 for a != 0); inv(0) = 0.
func inv(a byte) byte {
	r, sq := byte(1), a
	// After round i, sq = a^(2^(i+1)) and r = a^(2^(i+2)-2): after 7 rounds, a^254.
	for range 7 {
		sq = mul(sq, sq)
		r = mul(r, sq)
	}
	return r
}
