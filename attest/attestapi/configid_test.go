package attestapi

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitConfigID(t *testing.T) {
	tests := []struct {
		id, session, service string
		err                  string
	}{
		{id: "a/b", session: "a", service: "b"},
		{id: "ns/a/b", session: "ns/a", service: "b"},
		{id: "a", err: `config ID "a": want SESSION/SERVICE`},
		{id: "/b", err: "want SESSION/SERVICE"},
		{id: "a/", err: "want SESSION/SERVICE"},
		{id: strings.Repeat("s", 201) + "/" + strings.Repeat("v", 200), err: "config ID is 402 bytes, at most 401"},
	}
	for _, tt := range tests {
		s, svc, err := SplitConfigID(tt.id)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.id)
			continue
		}
		require.NoError(t, err, tt.id)
		assert.Equal(t, tt.session, s, tt.id)
		assert.Equal(t, tt.service, svc, tt.id)
	}
}

func TestSPIFFEID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	id, err := SPIFFEID(td, "flask-redis/redis/redis")
	require.NoError(t, err)
	assert.Equal(t, "spiffe://attestmesh.local/flask-redis/redis/redis", id.String())
	_, err = SPIFFEID(td, "a b/c")
	require.ErrorContains(t, err, `config ID "a b/c" is not a valid SPIFFE path`)
	assert.Equal(t, "spiffe://attestmesh.local/controlplane", ControlPlaneID(td).String())
}
