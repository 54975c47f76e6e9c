package resource_test

import (
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// maxValue is about the largest resource a response the gRPC limit admits (4 MiB) carries.
const maxValue = 4<<20 - 64

func field(num protowire.Number, parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

// filled repeats unit after head up to size bytes.
func filled(size int, head []byte, unit ...[]byte) []byte {
	var u []byte
	for _, p := range unit {
		u = append(u, p...)
	}
	b := head
	for len(b)+len(u) <= size {
		b = append(b, u...)
	}
	return b
}

// parsers are the three parsers, their results dropped.
var parsers = map[string]func([]*anypb.Any) error{
	"listeners": func(r []*anypb.Any) error { _, err := resource.ParseListeners(r); return err },
	"clusters":  func(r []*anypb.Any) error { _, err := resource.ParseClusters(r); return err },
	"secrets":   func(r []*anypb.Any) error { _, err := resource.ParseSecrets(r); return err },
}

// TestDecodeBudget: the hostile responses of the security review, and others like them, each a
// single resource of about 4 MiB, allocate at most about DecodeBudget (they took 80 to 180 MiB)
// and are refused with the field where the budget ran out and the limit.
func TestDecodeBudget(t *testing.T) {
	name := field(1, []byte("hostile"))
	socket := field(1, field(1, field(1, field(2, []byte("10.0.0.1")), protowire.AppendVarint([]byte{3 << 3}, 80))))
	pem := []byte("-----BEGIN CERTIFICATE-----\n")
	for i := 0; len(pem) < maxValue-200; i++ {
		pem = fmt.Appendf(pem, "%x:\n", i) // a PEM header line each: pem.Decode maps them
	}
	pem = append(pem, "\nAAAA\n-----END CERTIFICATE-----\n"...)
	tests := []struct {
		name    string
		kind    string
		value   []byte
		wantErr string
	}{
		// Old figures (before the budget) in MiB: 148, 90, 148, 180, 148, 91, 165, 112, 80, 83.
		{"empty lb_endpoints", "clusters", field(33, field(2, filled(maxValue-16, nil, field(2)))), "load_assignment: endpoints: lb_endpoints: 2097112 elements"},
		{"valid lb_endpoints", "clusters", append(name, field(33, field(1, []byte("x")), field(2, filled(maxValue-32, nil, field(2, socket))))...), "load_assignment: 209710 endpoints"},
		{"empty locality groups", "clusters", append(name, field(33, filled(maxValue-16, nil, field(2)))...), "load_assignment: endpoints:"},
		{"empty filter chains", "listeners", filled(maxValue, name, field(3)), "filter_chains"},
		{"empty filters", "listeners", append(name, field(3, filled(maxValue-16, nil, field(3)))...), "filter_chains: filters"},
		{"empty SAN matchers", "secrets", append(name, field(4, filled(maxValue-16, nil, field(15, field(2))))...), "match_typed_subject_alt_names"},
		{"empty certificate hashes", "secrets", append(name, field(4, filled(maxValue-16, nil, field(2)))...), "verify_certificate_hash"},
		// A oneof whose members alternate: each one resets the other's nested messages.
		{"alternating secret types", "secrets", filled(maxValue, name, field(2, field(1)), field(4)), "tls_certificate: certificate_chain"},
		{"PEM header lines", "secrets", append(field(1, []byte(resource.SecretSVID)), field(2, field(1, field(2, pem)), field(6, field(1, []byte(resource.KeyProvider))))...), "certificate_chain: 4194"},
	}
	typeURLs := map[string]string{"listeners": resource.ListenerType, "clusters": resource.ClusterType, "secrets": resource.SecretType}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.LessOrEqual(t, len(tt.value), 4<<20)
			res := []*anypb.Any{{TypeUrl: typeURLs[tt.kind], Value: tt.value}}
			var err error
			n := proxytest.Allocated(func() { err = parsers[tt.kind](res) })
			t.Logf("%d bytes allocated %.1f MiB: %v", len(tt.value), float64(n)/(1<<20), err)
			require.ErrorIs(t, err, resource.ErrDecodeBudget)
			require.ErrorContains(t, err, tt.wantErr)
			require.ErrorContains(t, err, "at most 24 MiB decoding one response")
			// The budget counts what the decoders allocate, rounded as the allocator does; what
			// it does not count (errors, the Walk closures' frames) is a few percent.
			limit := uint64(resource.DecodeBudget) * 9 / 8
			if raceEnabled {
				limit = uint64(resource.DecodeBudget) * 5 / 4
			}
			require.LessOrEqual(t, n, limit)
		})
	}
}

// TestOneofResetInPlace: members of a oneof that alternate reuse the member's message (the
// decoded messages form a tree, nothing else points to it): 4 MiB of them took 80 MiB.
func TestOneofResetInPlace(t *testing.T) {
	x := field(2, []byte("x")) // a one-byte string, which Go does not allocate
	res := []*anypb.Any{{TypeUrl: resource.ListenerType, Value: append(field(1, []byte("churn")), field(2, filled(maxValue-16, nil, field(1, x), field(2)))...)}}
	var err error
	n := proxytest.Allocated(func() { err = parsers["listeners"](res) })
	require.ErrorContains(t, err, `listener "churn": address: want a socket_address`)
	require.Less(t, n, uint64(1<<20))
}

// TestDecodeBudgetRealistic: the largest realistic responses are accepted, well within the
// budget: 1,000 clusters of 100 endpoints each (2.6 MB), 1,000 inbound listeners with 10
// allowed peers each.
func TestDecodeBudgetRealistic(t *testing.T) {
	var clusters, listeners []*anypb.Any
	peers := make([]spiffeid.ID, 10)
	for i := range peers {
		peers[i] = spiffeid.RequireFromPath(client.TrustDomain(), fmt.Sprintf("/app/client-%d", i))
	}
	for i := range 1000 {
		eps := make([]string, 100)
		for j := range eps {
			eps[j] = fmt.Sprintf("10.%d.%d.%d:8443", i/256, i%256, j)
		}
		clusters = append(clusters, mustAny(proxytest.OutboundCluster(fmt.Sprintf("svc-%d", i), 8000, server, eps...)))
		listeners = append(listeners, mustAny(proxytest.InboundListener(fmt.Sprintf("0.0.0.0:%d", 10000+i), peers...)))
	}
	for _, tt := range []struct {
		kind string
		res  []*anypb.Any
	}{{"clusters", clusters}, {"listeners", listeners}} {
		t.Run(tt.kind, func(t *testing.T) {
			size := 0
			for _, a := range tt.res {
				size += len(a.GetValue())
			}
			var err error
			n := proxytest.Allocated(func() { err = parsers[tt.kind](tt.res) })
			t.Logf("%d resources, %d bytes: allocated %.1f MiB", len(tt.res), size, float64(n)/(1<<20))
			require.NoError(t, err)
			require.Less(t, n, uint64(resource.DecodeBudget)*3/4, "a realistic response needs room")
		})
	}
}
