//go:build !attestmesh_sidecar

package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
)

// clientFlags are the flags of every verb that talks to the management API.
type clientFlags struct {
	url         string
	caFile      string
	identityDir string
}

func defaultIdentityDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "attestmesh")
	}
	return ".attestmesh"
}

func (f *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "controlplane", envOr("ATTESTMESH_CONTROLPLANE", "https://127.0.0.1:8081"),
		"management API URL ($ATTESTMESH_CONTROLPLANE)")
	fs.StringVar(&f.caFile, "ca-file", envOr("ATTESTMESH_CA_FILE", ""),
		"the control plane's CA bundle, pinned: as `attestmesh controlplane verify --out FILE` wrote it after attesting the control plane "+
			"(or its <data-dir>/ca.pem on its own machine); $ATTESTMESH_CA_FILE")
	fs.StringVar(&f.identityDir, "identity-dir", envOr("ATTESTMESH_IDENTITY_DIR", defaultIdentityDir()),
		"where the client identity (client.crt, client.key) lives; created on first use ($ATTESTMESH_IDENTITY_DIR)")
}

// client builds a management API client with the client identity.
func (f *clientFlags) client() (*mgmtapi.Client, error) {
	if f.caFile == "" {
		return nil, fmt.Errorf("--ca-file is required: the control plane's CA bundle, as `attestmesh controlplane verify --out FILE` " +
			"wrote it after attesting the control plane (or its <data-dir>/ca.pem on its own machine)")
	}
	pemBytes, err := os.ReadFile(f.caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool, err := ca.PoolFromPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", f.caFile, err)
	}
	id, err := mgmtapi.LoadOrCreateIdentity(f.identityDir)
	if err != nil {
		return nil, err
	}
	return mgmtapi.NewClient(mgmtapi.ClientConfig{URL: f.url, Roots: pool, Identity: id})
}
