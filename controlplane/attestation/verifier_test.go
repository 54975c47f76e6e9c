package attestation_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
)

// CachedCollateral asks its source once per FMSPC and TTL, and never keeps an error.
func TestCachedCollateral(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	calls := map[string]int{}
	fail := true
	cc := &attestation.CachedCollateral{TTL: time.Minute, Now: func() time.Time { return now },
		Source: attestation.CollateralFunc(func(_ context.Context, fmspc string) (dcap.Collateral, error) {
			calls[fmspc]++
			if fail {
				return dcap.Collateral{}, errors.New("not yet")
			}
			return dcap.Collateral{TCBInfo: []byte(fmspc + now.String())}, nil
		})}
	_, err := cc.Collateral(t.Context(), "A")
	require.Error(t, err)
	fail = false
	first, err := cc.Collateral(t.Context(), "A")
	require.NoError(t, err)
	now = now.Add(59 * time.Second)
	again, err := cc.Collateral(t.Context(), "A")
	require.NoError(t, err)
	assert.Equal(t, first, again)
	_, err = cc.Collateral(t.Context(), "B")
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"A": 2, "B": 1}, calls)

	now = now.Add(time.Second)
	later, err := cc.Collateral(t.Context(), "A")
	require.NoError(t, err)
	assert.NotEqual(t, first, later, "fetched again after the TTL")
	assert.Equal(t, 3, calls["A"])
}
