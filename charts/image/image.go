// Package image builds the attestmesh container image without a Docker engine: the static
// attestmesh binary at /usr/local/bin/attestmesh (the control plane; the image's entrypoint)
// and the sidecar build at /usr/local/bin/attestmesh-sidecar (the injected sidecar, init
// container and launcher) on an empty base, run as uid 65532, written as
// an OCI image layout (for crane, skopeo, podman, containerd's ctr import) and as a tarball
// that `docker load` takes. The build is reproducible: timestamps are zero. The Dockerfile in
// this directory builds the same image for those who use Docker.
package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinaryPath is where the image holds the attestmesh binary (its entrypoint, the control
// plane).
const BinaryPath = "/usr/local/bin/attestmesh"

// SidecarBinaryPath is where the image holds the sidecar build (make build's
// bin/attestmesh-sidecar); the injector's init container and sidecar run it from there, and the
// control plane accepts its measurement for sidecars (the file beside its own).
const SidecarBinaryPath = "/usr/local/bin/attestmesh-sidecar"

// User is the image's default user: nobody's conventional distroless uid and gid.
const User = "65532:65532"

// Config says what to build.
type Config struct {
	Binary string // the static attestmesh binary (CGO_ENABLED=0)
	// SidecarBinary is the static sidecar build (go build -tags attestmesh_sidecar,grpcnotrace).
	SidecarBinary string
	Ref           string // image reference, e.g. ghcr.io/attestmesh/attestmesh:0.1.0
	Version       string // org.opencontainers.image.version label
	Arch          string // GOARCH of the binary; empty means amd64
	// OutDir receives oci/ (an OCI image layout) and attestmesh.tar (docker load).
	OutDir string
}

// Build builds the image and writes it to cfg.OutDir; it returns the image's digest.
func Build(cfg Config) (v1.Hash, error) {
	if cfg.Binary == "" || cfg.SidecarBinary == "" || cfg.Ref == "" || cfg.OutDir == "" {
		return v1.Hash{}, errors.New("image: binary, sidecar binary, reference and output directory are required")
	}
	ref, err := name.ParseReference(cfg.Ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: reference %q: %w", cfg.Ref, err)
	}
	img, err := build(cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: digest: %w", err)
	}
	ociDir := filepath.Join(cfg.OutDir, "oci")
	if err := os.RemoveAll(ociDir); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	p, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: OCI layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.Name(),
	})); err != nil {
		return v1.Hash{}, fmt.Errorf("image: OCI layout: %w", err)
	}
	if err := tarball.WriteToFile(filepath.Join(cfg.OutDir, "attestmesh.tar"), ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("image: tarball: %w", err)
	}
	return digest, nil
}

func build(cfg Config) (v1.Image, error) {
	var files []file
	for _, f := range []struct{ src, dst string }{{cfg.Binary, BinaryPath}, {cfg.SidecarBinary, SidecarBinaryPath}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		files = append(files, file{path: f.dst, data: data})
	}
	layerTar, err := rootfs(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	arch := cfg.Arch
	if arch == "" {
		arch = "amd64"
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"--help"}
	cf.Config.User = User
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "attestmesh",
		"org.opencontainers.image.description": "attestmesh: control plane, sidecar and launcher of a confidential service mesh",
		"org.opencontainers.image.source":      "https://github.com/attestmesh/attestmesh",
		"org.opencontainers.image.version":     cfg.Version,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return img, nil
}

// file is an executable of the image.
type file struct {
	path string // absolute, under /usr/local/bin
	data []byte
}

// rootfs is the single layer: the directories, the binaries, and a writable /tmp.
func rootfs(bins []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, d := range []struct {
		name string
		mode int64
	}{{"usr/", 0o755}, {"usr/local/", 0o755}, {"usr/local/bin/", 0o755}, {"tmp/", 0o1777}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
	}
	for _, b := range bins {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: b.path[1:], Mode: 0o755, Size: int64(len(b.data)), ModTime: epoch, Format: tar.FormatPAX,
		}); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
		if _, err := tw.Write(b.data); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return buf.Bytes(), nil
}
