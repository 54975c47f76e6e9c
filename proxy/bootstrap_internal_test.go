package proxy

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEnvoyBootstrapSameAsGenerated shows that the hand-written bootstrap is byte for byte what
// protojson printed from go-control-plane's generated types.
func TestEnvoyBootstrapSameAsGenerated(t *testing.T) {
	cfgs := []Config{
		{ConfigID: "patients/redis"},
		{ConfigID: "team/a/patients/api", TrustDomain: "example.org", XDSAddr: "cas.mesh.svc:18000", XDSAnyMember: true, EnvoyCredentialsDir: "/dev/shm/svid"},
		{ConfigID: "a/b", XDSAddr: "[fd00::1]:18000", AdminAddr: "[::1]:15001", XDSServerID: "spiffe://attestmesh.local/cp/<&>\"x", EnvoyCredentialsDir: "/run/\"é\"/<x>"},
		{ConfigID: "a/b", XDSAddr: "nocolon"},
		{ConfigID: "a/b", AdminAddr: "127.0.0.1:99999"},
		{ConfigID: "redis"},
	}
	for _, cfg := range cfgs {
		want, wantErr := legacyEnvoyBootstrap(cfg)
		got, err := EnvoyBootstrap(cfg)
		if wantErr != nil {
			require.Error(t, err, "%+v", cfg)
			assert.Equal(t, wantErr.Error(), err.Error())
			continue
		}
		require.NoError(t, err, "%+v", cfg)
		assert.Equal(t, string(want), string(got), "%+v", cfg)
	}
}
