// Package oci measures a file inside a container image as the launcher measures it in the
// running container. It is apart from package measure so that what runs in a pod (the launcher
// and the sidecar) does not link an image library.
package oci

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// maxSymlinks bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinks = 40

// File measures the file at the absolute path p inside a container image, following
// symlinks inside the image (an absolute target starts at the image's root, never the host's),
// as the launcher measures it in the running container. It returns the measurement and the
// resolved path; it fails if that is not a regular file.
func File(img v1.Image, p string) (measure.MREnclave, string, error) {
	if !path.IsAbs(p) {
		return measure.MREnclave{}, "", fmt.Errorf("oci: %q is not an absolute path", p)
	}
	kinds, links, err := imageTree(img)
	if err != nil {
		return measure.MREnclave{}, "", err
	}
	resolved, err := resolve(p, kinds, links)
	if err != nil {
		return measure.MREnclave{}, "", err
	}
	if kinds[resolved] != tar.TypeReg {
		return measure.MREnclave{}, "", fmt.Errorf("oci: %s (resolved from %s) is not a regular file in the image", resolved, p)
	}
	m, err := hashImageFile(img, resolved)
	if err != nil {
		return measure.MREnclave{}, "", err
	}
	return m, resolved, nil
}

// cleanName turns a tar entry name (./usr/bin/x, usr/bin/x/) into an absolute clean path.
func cleanName(n string) string { return path.Clean("/" + strings.TrimPrefix(n, "./")) }

// imageTree lists the flattened image's entries by type, and its symlinks' targets.
func imageTree(img v1.Image) (map[string]byte, map[string]string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	kinds, links := map[string]byte{"/": tar.TypeDir}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return kinds, links, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("oci: reading the image: %w", err)
		}
		n := cleanName(h.Name)
		kinds[n] = h.Typeflag
		if h.Typeflag == tar.TypeSymlink {
			links[n] = h.Linkname
		}
		if h.Typeflag == tar.TypeLink { // a hard link: the file it names
			kinds[n] = tar.TypeReg
			links[n] = "\x00" + cleanName(h.Linkname)
		}
	}
}

// resolve follows symlinks in every component of p, within the image.
func resolve(p string, kinds map[string]byte, links map[string]string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		if _, ok := kinds[next]; !ok {
			return "", fmt.Errorf("oci: %s: %s does not exist in the image", p, next)
		}
		target, isLink := links[next]
		if !isLink || strings.HasPrefix(target, "\x00") {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinks {
			return "", fmt.Errorf("oci: %s: too many levels of symbolic links in the image", p)
		}
		base := cur
		if path.IsAbs(target) {
			base = "/"
		}
		rest := strings.Split(strings.TrimPrefix(path.Join(base, target), "/"), "/")
		parts = append(rest, parts...)
		cur = "/"
	}
	if t, ok := links[cur]; ok && strings.HasPrefix(t, "\x00") {
		return t[1:], nil
	}
	return cur, nil
}

// hashImageFile hashes the contents of the regular file at p in the flattened image.
func hashImageFile(img v1.Image, p string) (measure.MREnclave, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return measure.MREnclave{}, fmt.Errorf("oci: %s is not in the image", p)
		}
		if err != nil {
			return measure.MREnclave{}, fmt.Errorf("oci: reading the image: %w", err)
		}
		if cleanName(h.Name) != p || h.Typeflag != tar.TypeReg {
			continue
		}
		sum := sha256.New()
		if _, err := io.CopyN(sum, tr, h.Size); err != nil { // the header's size, no more
			return measure.MREnclave{}, fmt.Errorf("oci: reading %s in the image: %w", p, err)
		}
		var m measure.MREnclave
		copy(m[:], sum.Sum(nil))
		return m, nil
	}
}
