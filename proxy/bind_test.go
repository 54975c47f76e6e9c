package proxy_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/attestmesh/attestmesh/proxy"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// TestBindInbound: with the pod's IP, inbound listeners on the wildcard address bind to it;
// inbound listeners on an address of their own and outbound listeners stay where they are.
func TestBindInbound(t *testing.T) {
	ls := []*resource.Listener{
		{Name: "inbound|6379", Address: "0.0.0.0:6379", Direction: resource.Inbound},
		{Name: "inbound|8443", Address: "10.1.2.3:8443", Direction: resource.Inbound},
		{Name: "inbound|v6", Address: "[::]:9000", Direction: resource.Inbound},
		{Name: "outbound|redis|6379", Address: "127.0.0.1:6379", Direction: resource.Outbound},
	}
	got := proxy.BindInbound(ls, netip.MustParseAddr("10.232.0.7"))
	var addrs []string
	for _, l := range got {
		addrs = append(addrs, l.Address)
	}
	assert.Equal(t, []string{"10.232.0.7:6379", "10.1.2.3:8443", "10.232.0.7:9000", "127.0.0.1:6379"}, addrs)
	assert.Equal(t, "0.0.0.0:6379", ls[0].Address, "the parsed resources are not changed")
	assert.Same(t, ls[3], got[3])

	assert.Equal(t, ls, proxy.BindInbound(ls, netip.Addr{}), "no IP: unchanged")
}
