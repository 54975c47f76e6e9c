package controlplane_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// TestControlPlaneAttestsItself: the real control plane (in this process, so its measurement
// is this test binary's) serves evidence that a client verifies, with the simulated root
// taken from the evidence or pinned from <data-dir>/simulated-root.pem; a client expecting
// another binary, or talking through a relay that is not the control plane, refuses.
func TestControlPlaneAttestsItself(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	r := start(t, dir, keyFile)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	self, err := measure.Running()
	require.NoError(t, err)
	policy := evidence.Policy{TEE: attestapi.TEESimulation, MREnclave: self}

	res, err := evidence.Attest(ctx, r.addrs.Mgmt, policy)
	require.NoError(t, err)
	assert.Equal(t, r.addrs.BundlePEM, ca.MarshalCertsPEM(res.CA), "the attested CA is the one the control plane uses")
	assert.True(t, res.RootFromEvidence)

	rootPEM, err := os.ReadFile(filepath.Join(dir, "simulated-root.pem"))
	require.NoError(t, err)
	pinned := policy
	pinned.Root, err = dcap.LoadRoot(rootPEM)
	require.NoError(t, err)
	res, err = evidence.Attest(ctx, r.addrs.Mgmt, pinned)
	require.NoError(t, err)
	assert.False(t, res.RootFromEvidence)

	other := policy
	other.MREnclave = [32]byte{0xde, 0xad}
	_, err = evidence.Attest(ctx, r.addrs.Mgmt, other)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "expected MRENCLAVE "+hex.EncodeToString(other.MREnclave[:])+", got "+self.Hex())

	// A relay with a certificate of its own CA, passing the real evidence through.
	target, err := url.Parse("https://" + r.addrs.Mgmt)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mustPool(t, r.addrs.BundlePEM), MinVersion: tls.VersionTLS12}}
	relay := httptest.NewTLSServer(proxy)
	defer relay.Close()
	_, err = evidence.Attest(ctx, relay.Listener.Addr().String(), policy)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not chain to the attested CA")
}

// TestControlPlaneWithoutTEE: neither Gramine nor simulation: it serves no evidence and says
// so; asking for Gramine's device where there is none stops the start.
func TestControlPlaneWithoutTEE(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	cfg := controlplane.Config{
		DataDir: filepath.Join(t.TempDir(), "data"), StoreKeyFile: keyFile, TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		AttestationDevice: filepath.Join(t.TempDir(), "attestation"),
	}
	r := startWith(t, cfg)
	_, _, err = evidence.Fetch(t.Context(), r.addrs.Mgmt, [32]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "404 Not Found: cas: this control plane serves no attestation evidence")
	r.stop(t)

	cfg.SelfAttestation = controlplane.SelfAttestGramine
	err = controlplane.Run(t.Context(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--self-attestation gramine: gramine: "+cfg.AttestationDevice+"/attestation_type does not exist: "+
		"this process does not run in an SGX enclave under Gramine")
}
