package resource

import (
	"errors"
	"fmt"
)

// DecodeBudget is what parsing one response (one call of ParseListeners, ParseClusters or
// ParseSecrets) may allocate, in bytes: the decoded messages and strings, charged before each is
// allocated (a repeated field's elements all at once, counted first), and the parsed results.
// The gRPC limit admits a 4 MiB response, and an empty repeated element is two bytes on the
// wire but tens in memory: without a bound, one response of empty lb_endpoints took 148 MiB,
// more than the sidecar's memory limit (128 MiB). A response the budget refuses is NACKed with
// the field where it ran out. 24 MiB holds 1,000 clusters of 100 endpoints each (17 MiB); with
// the ADS codec's copy of the response (proxy/ads, at most 5.5 MiB) one response allocates at
// most about 30 MiB.
const DecodeBudget = 24 << 20

// ErrDecodeBudget is the refusal of a response that would allocate more than DecodeBudget.
var ErrDecodeBudget = errors.New("response too large to decode")

// budget is what is left of DecodeBudget in one parse call.
type budget struct{ left uintptr }

func newBudget() *budget { return &budget{left: DecodeBudget} }

// charge takes n bytes from the budget, or refuses without taking any once it is spent.
func (d *budget) charge(n uintptr) error {
	if n > d.left {
		d.left = 0
		return fmt.Errorf("%w: the sidecar allocates at most %d MiB decoding one response", ErrDecodeBudget, DecodeBudget>>20)
	}
	d.left -= n
	return nil
}

// sanOverhead is what parsing a SAN matcher allocates besides its value's copies (the
// matcher's slot, the authorizer's closure, the exact IDs' slice).
const sanOverhead = 128

// allocSize is what allocating an object of n bytes takes: small objects are rounded up to
// the allocator's size classes (multiples of 16 above 16 bytes, a little more than the
// classes below 128).
func allocSize(n uintptr) uintptr {
	if n <= 8 {
		return 8
	}
	return (n + 15) &^ 15
}

// pemCost is what decoding a byte of PEM may allocate, charged before pem.Decode and
// x509.ParseCertificate run: pem.Decode keeps every header line of a block in a map, and a
// block of 4 MiB of header lines took 83 MiB (20 bytes a byte). A response may thus carry
// about 1 MiB of PEM; an SVID chain and a trust bundle are a few KiB.
const pemCost = 24
