package launch

import (
	"context"
	"fmt"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/fspf"
)

// FromAttestation is the Attestor over the control plane's attestation API: it attests as
// ROLE_APP with the launcher's measurement and returns the rendered service configuration.
func FromAttestation(c *attestapi.Client) Attestor {
	return AttestorFunc(func(ctx context.Context, req Request) (*Config, error) {
		res, err := c.Attest(ctx, attestapi.Request{
			ConfigID: req.ConfigID, Role: attestationpb.Role_ROLE_APP, Key: req.Key, Evidence: attestapi.Evidence{MREnclave: req.MREnclave},
		})
		if err != nil {
			return nil, err
		}
		rc := res.Config
		if rc == nil {
			return nil, fmt.Errorf("launch: attestation of %s returned no service configuration", req.ConfigID)
		}
		cfg := &Config{Argv: rc.GetArgv(), Env: rc.GetEnv(), Dir: rc.GetDir(), Files: map[string][]byte{}, SidecarGrant: res.SidecarGrant}
		for _, f := range rc.GetFiles() {
			cfg.Files[f.GetPath()] = f.GetContent()
		}
		if fs := rc.GetFspf(); fs != nil {
			cfg.FSPF = &FSPF{Path: fs.GetPath(), Key: fs.GetKey(), Tag: fs.GetTag()}
		}
		return cfg, nil
	})
}

// DecryptFSPF is the FSPFDecrypter over attest/fspf: the tree is checked against its tag,
// decrypted in memory, written onto the private tmpfs by Materialize, then wiped from memory.
func DecryptFSPF(dir, key, tag string) (PlaintextTree, error) {
	k, err := fspf.ParseKey(key)
	if err != nil {
		return nil, err
	}
	t, err := fspf.ParseTag(tag)
	if err != nil {
		return nil, err
	}
	tree, err := fspf.Decrypt(dir, k, t)
	if err != nil {
		return nil, err
	}
	return fspfTree{tree}, nil
}

type fspfTree struct{ t *fspf.Tree }

func (f fspfTree) Materialize(root string) error {
	defer f.t.Wipe()
	return f.t.WriteDir(root)
}
