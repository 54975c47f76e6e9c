package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "attestmesh")
	content := []byte("\x7fELF not really, but bytes to carry")
	require.NoError(t, os.WriteFile(bin, content, 0o600))
	sidecar := filepath.Join(dir, "attestmesh-sidecar")
	sidecarContent := []byte("\x7fELF the sidecar build")
	require.NoError(t, os.WriteFile(sidecar, sidecarContent, 0o600))
	out := filepath.Join(dir, "out")
	cfg := Config{Binary: bin, SidecarBinary: sidecar, Ref: "registry.example.com/attestmesh:1.2.3", Version: "1.2.3", OutDir: out}
	digest, err := Build(cfg)
	require.NoError(t, err)

	again, err := Build(Config{Binary: bin, SidecarBinary: sidecar, Ref: cfg.Ref, Version: "1.2.3", OutDir: filepath.Join(dir, "out2")})
	require.NoError(t, err)
	assert.Equal(t, digest, again, "reproducible")

	p, err := layout.FromPath(filepath.Join(out, "oci"))
	require.NoError(t, err)
	idx, err := p.ImageIndex()
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	assert.Equal(t, digest, im.Manifests[0].Digest)
	assert.Equal(t, "registry.example.com/attestmesh:1.2.3", im.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	img, err := p.Image(digest)
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, []string{BinaryPath}, cf.Config.Entrypoint)
	assert.Equal(t, User, cf.Config.User)
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, "1.2.3", cf.Config.Labels["org.opencontainers.image.version"])

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1, "an empty base plus the binary")
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	files := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		files[h.Name] = h.Mode
		switch h.Name {
		case BinaryPath[1:]:
			got, err := io.ReadAll(tr)
			require.NoError(t, err)
			assert.Equal(t, content, got)
		case SidecarBinaryPath[1:]:
			got, err := io.ReadAll(tr)
			require.NoError(t, err)
			assert.Equal(t, sidecarContent, got)
		}
	}
	assert.Equal(t, map[string]int64{"usr/": 0o755, "usr/local/": 0o755, "usr/local/bin/": 0o755, "tmp/": 0o1777,
		"usr/local/bin/attestmesh": 0o755, "usr/local/bin/attestmesh-sidecar": 0o755}, files)

	tag, err := name.NewTag(cfg.Ref)
	require.NoError(t, err)
	fromTar, err := tarball.ImageFromPath(filepath.Join(out, "attestmesh.tar"), &tag)
	require.NoError(t, err)
	tarConfig, err := fromTar.ConfigName()
	require.NoError(t, err)
	wantConfig, err := img.ConfigName()
	require.NoError(t, err)
	assert.Equal(t, wantConfig, tarConfig, "the docker-load tarball holds the same image (config and layers)")
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing fields", Config{}, "required"},
		{"no sidecar binary", Config{Binary: "x", Ref: "a/b:c", OutDir: t.TempDir()}, "sidecar binary"},
		{"bad reference", Config{Binary: "x", SidecarBinary: "y", Ref: "UPPER/Case:tag!", OutDir: t.TempDir()}, "image: reference"},
		{"no binary", Config{Binary: filepath.Join(t.TempDir(), "none"), SidecarBinary: "y", Ref: "a/b:c", OutDir: t.TempDir()}, "image: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
