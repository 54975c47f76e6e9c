package grant

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	listening := make(chan struct{})
	s.OnListen = func(string) { close(listening) }
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("grant server: %v", err)
	}
}

func TestInitialThenFetched(t *testing.T) {
	id := fmt.Sprintf("t/%d/svc", time.Now().UnixNano())
	var fetched atomic.Int32
	s := &Server{ConfigID: id, Initial: []byte("first"), MinInterval: 50 * time.Millisecond,
		Fetch: func(context.Context) ([]byte, error) { return fmt.Appendf(nil, "fresh-%d", fetched.Add(1)), nil }}
	serve(t, s)

	g, err := Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, "first", string(g), "the launcher's own grant first")
	g, err = Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, "fresh-1", string(g), "then one attestation per request")
	start := time.Now()
	g, err = Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, "fresh-2", string(g))
	assert.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond, "no more often than MinInterval")
}

func TestRefusals(t *testing.T) {
	id := fmt.Sprintf("t/%d/svc", time.Now().UnixNano())
	_, err := Get(t.Context(), id)
	require.ErrorIs(t, err, ErrNoLauncher, "nobody serves yet")

	s := &Server{ConfigID: id, Fetch: func(context.Context) ([]byte, error) {
		return nil, errors.New("attestation refused (mrenclave_mismatch)")
	}}
	serve(t, s)
	_, err = Get(t.Context(), id)
	require.ErrorContains(t, err, "the launcher refused: attestation refused (mrenclave_mismatch)")

	// A second launcher of the same config ID in this namespace cannot take the socket.
	err = (&Server{ConfigID: id}).Run(t.Context())
	require.ErrorContains(t, err, "grant: serve @attestmesh/grant/")
}

func TestSocketNamePerConfigID(t *testing.T) {
	assert.NotEqual(t, SocketName("a/b"), SocketName("a/c"))
	assert.Len(t, SocketName("x/"+string(make([]byte, 400))), len("@attestmesh/grant/")+32, "bounded whatever the config ID")
}
