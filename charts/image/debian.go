package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DebianConfig says which image of Debian packages to build.
type DebianConfig struct {
	// Ref names the image, e.g. localhost/flaskredis/redis:1.
	Ref string
	// Packages are installed, with their dependencies, on Debian's essential set.
	Packages []string
	// Suite is the Debian release (bookworm when empty).
	Suite string
	// CacheDir keeps the root file systems, keyed by suite and packages: mmdebstrap runs once.
	CacheDir string
	// Out is the tarball to write (docker load, ctr images import, crane push).
	Out string
	// Log receives progress; nil discards it.
	Log io.Writer
}

// debianExcludes keep documentation and translations out of the images.
var debianExcludes = []string{"/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*"}

// BuildDebian builds an image whose one layer is a Debian root file system made by mmdebstrap
// (the essential set plus cfg.Packages, fetched through apt as this machine is set up for it),
// and writes it to cfg.Out. It returns the image's digest. The root file system is cached.
func BuildDebian(ctx context.Context, cfg DebianConfig) (v1.Hash, error) {
	if cfg.Ref == "" || cfg.Out == "" || cfg.CacheDir == "" || len(cfg.Packages) == 0 {
		return v1.Hash{}, errors.New("image: reference, packages, cache directory and output are required")
	}
	if cfg.Suite == "" {
		cfg.Suite = "bookworm"
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	tag, err := name.NewTag(cfg.Ref, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: reference %q: want a tagged reference: %w", cfg.Ref, err)
	}
	if tag.TagStr() == "latest" {
		return v1.Hash{}, fmt.Errorf("image: %s: name a version, not latest (the kubelet always pulls latest)", cfg.Ref)
	}
	rootfs, err := debianRootFS(ctx, cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromFile(rootfs, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: layer from %s: %w", rootfs, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = map[string]string{"org.opencontainers.image.description": "Debian " + cfg.Suite + ": " + strings.Join(cfg.Packages, " ")}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, fmt.Errorf("image: config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err != nil { //nolint:gosec // an output directory
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	tmp := cfg.Out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("image: write %s: %w", cfg.Out, err)
	}
	if err := os.Rename(tmp, cfg.Out); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	return img.Digest()
}

// debianRootFS returns the cached root file system tarball for cfg, making it with mmdebstrap
// when it is not there.
func debianRootFS(ctx context.Context, cfg DebianConfig) (string, error) {
	pkgs := slices.Clone(cfg.Packages)
	slices.Sort(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "mmdebstrap essential %s %s %s", cfg.Suite, strings.Join(pkgs, ","), strings.Join(debianExcludes, ","))
	key := hex.EncodeToString(h.Sum(nil))[:16]
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil { //nolint:gosec // a cache directory
		return "", fmt.Errorf("image: %w", err)
	}
	out := filepath.Join(cfg.CacheDir, fmt.Sprintf("debian-%s-%s.tar", cfg.Suite, key))
	if _, err := os.Stat(out); err == nil {
		fmt.Fprintf(cfg.Log, "image: %s: root file system from the cache (%s)\n", cfg.Ref, out)
		return out, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", errors.New("image: mmdebstrap is not installed (apt-get install mmdebstrap)")
	}
	args := []string{"--variant=essential", "--include=" + strings.Join(pkgs, ","), "--quiet"}
	for _, x := range debianExcludes {
		args = append(args, "--dpkgopt=path-exclude="+x)
	}
	tmp := strings.TrimSuffix(out, ".tar") + ".partial.tar" // mmdebstrap picks its output format by the name
	args = append(args, "--format=tar", cfg.Suite, tmp)
	fmt.Fprintf(cfg.Log, "image: %s: mmdebstrap %s (a few minutes; cached in %s)\n", cfg.Ref, strings.Join(args, " "), cfg.CacheDir)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("image: mmdebstrap %s: %w\n%s", strings.Join(pkgs, " "), err, lastLines(b, 20))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	return out, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
