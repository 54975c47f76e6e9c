package mesh

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/measure/oci"
)

// Images says where `attestmesh apply` reads the services' images to measure the binaries that
// will run: Dir, when set, may hold <service>.tar (a `docker save` or OCI tarball, as `make
// example-images` writes) or <service>/ (an OCI image layout); a service found in neither is
// read from its image's registry.
type Images struct {
	Dir    string
	Remote []remote.Option
}

// Image returns the service's image and says where it came from.
func (im Images) Image(ctx context.Context, s *Service) (v1.Image, string, error) {
	if s.Image == "" {
		return nil, "", fmt.Errorf("mesh: services %s: no image to measure %s in", s.Name, s.Binary)
	}
	ref, err := name.ParseReference(s.Image)
	if err != nil {
		return nil, "", fmt.Errorf("mesh: services %s: image %q: %w", s.Name, s.Image, err)
	}
	if im.Dir != "" {
		tarPath := filepath.Join(im.Dir, s.Name+".tar")
		if _, err := os.Stat(tarPath); err == nil {
			var tag *name.Tag
			if t, ok := ref.(name.Tag); ok {
				tag = &t
			}
			img, err := tarball.ImageFromPath(tarPath, tag)
			if err != nil {
				return nil, "", fmt.Errorf("mesh: services %s: image %s in %s: %w", s.Name, s.Image, tarPath, err)
			}
			return img, tarPath, nil
		}
		dir := filepath.Join(im.Dir, s.Name)
		if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
			img, err := layoutImage(dir)
			if err != nil {
				return nil, "", fmt.Errorf("mesh: services %s: OCI layout %s: %w", s.Name, dir, err)
			}
			return img, "OCI layout " + dir, nil
		}
	}
	opts := append([]remote.Option{remote.WithContext(ctx)}, im.Remote...)
	img, err := remote.Image(ref, opts...)
	if err != nil {
		where := ""
		if im.Dir != "" {
			where = fmt.Sprintf(" (neither %s.tar nor an OCI layout %s/ in %s)", s.Name, s.Name, im.Dir)
		}
		return nil, "", fmt.Errorf("mesh: services %s: image %s from its registry%s: %w", s.Name, s.Image, where, err)
	}
	return img, "registry " + ref.Context().RegistryStr(), nil
}

// layoutImage is the only image of an OCI layout.
func layoutImage(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	man, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(man.Manifests) != 1 {
		return nil, fmt.Errorf("want one image, the layout has %d", len(man.Manifests))
	}
	return idx.Image(man.Manifests[0].Digest)
}

// Measured is where a {measure: PATH} variable's value came from.
type Measured struct {
	Variable, Path string
	// From names the images (service: source) or "this machine".
	From []string
	// Resolved is the file measured in the images, after their symlinks.
	Resolved string
}

// ResolveInImages returns every variable's value like Resolve, except that a binary that a
// service with an image runs ({measure: PATH} where PATH is the service's binary) is measured
// in that image, following symlinks inside it, as the launcher will measure it in the
// container. Several services running PATH must agree. A PATH that no service with an image
// runs is measured on this machine. It also says where each measurement came from.
func (m *Mesh) ResolveInImages(ctx context.Context, im Images) (map[string]string, []Measured, error) {
	out := make(map[string]string, len(m.Variables))
	var measured []Measured
	images := map[string]v1.Image{}
	for _, varName := range slices.Sorted(maps.Keys(m.Variables)) {
		v := m.Variables[varName]
		if v.Measure == "" {
			out[varName] = v.Value
			continue
		}
		rec := Measured{Variable: varName, Path: v.Measure}
		var value string
		for i := range m.Services {
			s := &m.Services[i]
			if s.Binary != v.Measure || s.Image == "" {
				continue
			}
			img, ok := images[s.Name]
			if !ok {
				var from string
				var err error
				if img, from, err = im.Image(ctx, s); err != nil {
					return nil, nil, fmt.Errorf("mesh: variables.%s: %w", varName, err)
				}
				images[s.Name] = img
				rec.From = append(rec.From, s.Name+": "+s.Image+" ("+from+")")
			}
			mr, resolved, err := oci.File(img, v.Measure)
			if err != nil {
				return nil, nil, fmt.Errorf("mesh: variables.%s: services %s: image %s: %w", varName, s.Name, s.Image, err)
			}
			if value != "" && value != mr.Hex() {
				return nil, nil, fmt.Errorf("mesh: variables.%s: %s differs between the images of the services that run it (%s): give each its own variable",
					varName, v.Measure, strings.Join(rec.From, "; "))
			}
			value = mr.Hex()
			rec.Resolved = resolved
		}
		if value == "" {
			mr, err := measure.File(v.Measure)
			if err != nil {
				return nil, nil, fmt.Errorf("mesh: variables.%s: no service image runs %s, and on this machine: %w", varName, v.Measure, err)
			}
			value, rec.From = mr.Hex(), []string{"this machine"}
		}
		out[varName] = value
		measured = append(measured, rec)
	}
	return out, measured, nil
}

// FSPFFiles lists the files of an encrypted tree (relative, slash-separated), for the chart
// that carries it.
func FSPFFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: encrypted tree %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, errors.New("mesh: encrypted tree " + dir + " is empty")
	}
	return files, nil
}
