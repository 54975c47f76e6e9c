package attestapi

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTarget(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
		resolver      bool
	}{
		{in: "127.0.0.1:18765", want: "127.0.0.1:18765"},
		{in: "dns:///attestmesh.attestmesh-system.svc:18765", want: "dns:///attestmesh.attestmesh-system.svc:18765"},
		{in: "127.0.0.1:1,127.0.0.2:2", want: "attestmesh-", resolver: true},
		{in: "127.0.0.1:1, cp-1:2", want: "attestmesh-", resolver: true},
		{in: "127.0.0.1:1,nope", err: `address "nope" in "127.0.0.1:1,nope" is not host:port`},
	} {
		target, opts, err := Target(tt.in)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.True(t, strings.HasPrefix(target, tt.want), "%s: %s", tt.in, target)
		want := 1
		if tt.resolver {
			want = 2 // the service config and the resolver of the addresses
		}
		assert.Len(t, opts, want, tt.in)
	}
}
