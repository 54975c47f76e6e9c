package xds

import (
	"context"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// TestOnPeerReportsTheStreamsSVID: every stream that opens reports its authenticated node and
// the chain it presented (what a restarted control plane learns SVIDs from); a refused stream
// reports nothing.
func TestOnPeerReportsTheStreamsSVID(t *testing.T) {
	type seen struct {
		id    spiffeid.ID
		chain []*x509.Certificate
	}
	peers := make(chan seen, 4)
	e := startADS(t)
	srv, err := New(Config{
		TLS:    e.srv.tls,
		OnPeer: func(id spiffeid.ID, chain []*x509.Certificate) { peers <- seen{id, chain} },
	})
	require.NoError(t, err)
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); assert.NoError(t, <-done) }()
	e.addr = lis.Addr().String() // e.open dials this server with e's client certificates

	stream := e.dial(t, "flask")
	require.NoError(t, stream.Send(request("", resource.ListenerType)))
	select {
	case p := <-peers:
		assert.Equal(t, flaskID, p.id)
		require.Len(t, p.chain, 1)
		assert.Equal(t, e.leaves[flaskID].Raw, p.chain[0].Raw)
	case <-time.After(10 * time.Second):
		t.Fatal("OnPeer was not called for an authenticated stream")
	}

	refused, err := e.open(t, "no-spiffe-id")
	require.NoError(t, err)
	_, err = fetch(t, refused, request("", resource.ListenerType))
	require.Error(t, err)
	select {
	case p := <-peers:
		t.Fatalf("OnPeer called for a refused stream: %v", p.id)
	default:
	}
}
