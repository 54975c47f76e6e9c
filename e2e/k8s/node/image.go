//go:build e2e_k8s

package node

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
)

// Image is a one-binary container image: a static binary (CGO_ENABLED=0) as the entrypoint on
// an empty base, with a writable /tmp. It is written as a tarball that `ctr images import` (and
// `docker load`) reads; timestamps are zero, so the same binary gives the same image.
type Image struct {
	// Ref names the image, with a tag that is not latest (the kubelet always pulls latest, and
	// this node has no registry), e.g. localhost/attestmesh/echo:e2e.
	Ref string
	// Binary is the path of the static binary on this machine.
	Binary string
	// Path is where the binary lives in the image. Default /usr/local/bin/ + its file name.
	Path string
	// Args are the image's Cmd (arguments to the binary).
	Args []string
	// Env are the image's environment variables (KEY=value); PATH is always set.
	Env []string
	// User is the image's user (uid[:gid]); empty means root.
	User string
}

// Write writes the image as a tarball at tarPath.
func (img Image) Write(tarPath string) error {
	ref, err := name.NewTag(img.Ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("node: image %q: want a tagged reference such as localhost/name:tag: %w", img.Ref, err)
	}
	if ref.TagStr() == "latest" {
		return fmt.Errorf("node: image %q: tag latest makes the kubelet pull, and this node has no registry: use another tag", img.Ref)
	}
	bin, err := os.ReadFile(img.Binary)
	if err != nil {
		return fmt.Errorf("node: image %s: %w", img.Ref, err)
	}
	inImage := img.Path
	if inImage == "" {
		inImage = "/usr/local/bin/" + filepath.Base(img.Binary)
	}
	if !path.IsAbs(inImage) {
		return fmt.Errorf("node: image %s: path %q is not absolute", img.Ref, inImage)
	}
	layerTar, err := binaryLayer(inImage, bin)
	if err != nil {
		return fmt.Errorf("node: image %s: %w", img.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fmt.Errorf("node: image %s: layer: %w", img.Ref, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	out, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return fmt.Errorf("node: image %s: %w", img.Ref, err)
	}
	cf, err := out.ConfigFile()
	if err != nil {
		return fmt.Errorf("node: image %s: %w", img.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{inImage}
	cf.Config.Cmd = img.Args
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, img.Env...)
	cf.Config.User = img.User
	cf.Config.WorkingDir = "/"
	if out, err = mutate.ConfigFile(out, cf); err != nil {
		return fmt.Errorf("node: image %s: config: %w", img.Ref, err)
	}
	if err := tarball.WriteToFile(tarPath, ref, out); err != nil {
		return fmt.Errorf("node: image %s: %w", img.Ref, err)
	}
	return nil
}

// binaryLayer is a layer with the directories leading to inImage, the binary, and /tmp.
func binaryLayer(inImage string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := []string{}
	for d := path.Dir(inImage); d != "/"; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if inImage != "/tmp" && !strings.HasPrefix(inImage, "/tmp/") {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: inImage[1:], Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// GoImage builds the Go main package pkg (an import path in this module, built with the tag
// e2e_k8s, CGO_ENABLED=0) into a one-binary image named ref, and returns the tarball's path
// (in the test's temporary directory), for Cluster.ImportImage.
func GoImage(t *testing.T, pkg, ref string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	tarPath := filepath.Join(t.TempDir(), path.Base(pkg)+".tar")
	require.NoError(t, buildGoImage(ctx, tarPath, pkg, ref))
	return tarPath
}

// buildGoImage is GoImage without the test.
func buildGoImage(ctx context.Context, tarPath, pkg, ref string) error {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return errors.New("node: cannot locate this module's source")
	}
	bin := strings.TrimSuffix(tarPath, ".tar") + ".bin"
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "e2e_k8s", "-trimpath", "-o", bin, pkg)
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("node: go build %s: %w: %s", pkg, err, lastBytes(out, 2000))
	}
	defer os.Remove(bin)
	return Image{Ref: ref, Binary: bin, Path: "/" + path.Base(pkg)}.Write(tarPath)
}

// ImportImage imports an image tarball (docker-archive or OCI, e.g. from GoImage or
// Image.Write) into the node's containerd, where the kubelet finds it by its name. Use
// imagePullPolicy IfNotPresent or Never (the default for a tag other than latest).
func (c *Cluster) ImportImage(t *testing.T, tarPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	require.NoError(t, c.importImage(ctx, tarPath))
}

func (c *Cluster) importImage(ctx context.Context, tarPath string) error {
	out, err := command(ctx, nil, "ctr", "--address", c.ContainerdAddress(), "-n", "k8s.io", "images", "import", tarPath)
	if err != nil {
		return err
	}
	c.log.Debug("imported", "image", tarPath, "ctr", strings.TrimSpace(string(out)))
	return nil
}
