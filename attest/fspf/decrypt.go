package fspf

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sentinel errors of Decrypt; every refusal wraps one of them.
var (
	// ErrTagMismatch: the manifest is not the one the session's fspf_tag names.
	ErrTagMismatch = errors.New("fspf: tag mismatch")
	// ErrWrongKey: the key is not the one the tree was encrypted with.
	ErrWrongKey = errors.New("fspf: wrong key")
	// ErrTampered: the tree's files do not match its manifest.
	ErrTampered = errors.New("fspf: tree does not match its manifest")
)

// File is one decrypted regular file.
type File struct {
	Path string      // slash-separated, relative to the tree's root
	Mode fs.FileMode // permission bits
	Data []byte
}

// Dir is one directory of a decrypted tree.
type Dir struct {
	Path string
	Mode fs.FileMode
}

// Tree is a decrypted tree held in memory, entries in canonical (byte) order of path, parents
// before children.
type Tree struct {
	Dirs  []Dir
	Files []File
}

// Decrypt opens the encrypted tree at dir (the directory, or its .fspf manifest) with the
// session's key and tag and returns the plaintext in memory. It refuses, naming the offending
// path, when the tag does not match, the key is wrong, or a file was changed, added, removed or
// renamed.
func Decrypt(dir string, key Key, tag Tag) (*Tree, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("fspf: %w", err)
	}
	if !fi.IsDir() {
		if filepath.Base(dir) != ManifestName {
			return nil, fmt.Errorf("fspf: %s is neither an encrypted tree nor its %s manifest", dir, ManifestName)
		}
		dir = filepath.Dir(dir)
	}
	return DecryptFS(os.DirFS(atomicWriterData(dir)), key, tag)
}

// atomicWriterData returns the directory that holds a tree mounted from a Kubernetes ConfigMap
// or Secret volume, and dir itself otherwise. The kubelet writes such a volume atomically: the
// files and directories are in a timestamped directory, ..data is a symlink to it, and every
// top-level name is a symlink into ..data. The tree is then ..data's target, with regular files
// and directories only; the manifest and the tag check it as any other tree.
func atomicWriterData(dir string) string {
	const data = "..data"
	target, err := os.Readlink(filepath.Join(dir, data))
	if err != nil || target == "" || strings.ContainsRune(target, filepath.Separator) || target == "." || target == ".." {
		return dir // not a symlink to a sibling: no atomic writer here
	}
	if fi, err := os.Stat(filepath.Join(dir, target)); err != nil || !fi.IsDir() {
		return dir
	}
	return filepath.Join(dir, target)
}

// DecryptFS is Decrypt over any file system whose root is the encrypted tree.
func DecryptFS(fsys fs.FS, key Key, tag Tag) (*Tree, error) {
	raw, err := readRegular(fsys, ManifestName, MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("fspf: manifest: %w", err)
	}
	got := sha256.Sum256(raw)
	if subtle.ConstantTimeCompare(got[:], tag[:]) != 1 {
		return nil, fmt.Errorf("%w: the manifest hashes to %x, the session expects %x "+
			"(files were changed, added, removed or renamed, or the tag belongs to another tree)", ErrTagMismatch, got, tag[:])
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, err
	}
	check, err := keyCheck(key)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(check[:], m.keyCheck[:]) != 1 {
		return nil, fmt.Errorf("%w: fspf_key is not the key this tree was encrypted with", ErrWrongKey)
	}
	if err := compareTree(fsys, m); err != nil {
		return nil, err
	}
	t := &Tree{}
	for _, e := range m.entries {
		if e.dir {
			t.Dirs = append(t.Dirs, Dir{Path: e.path, Mode: e.mode})
			continue
		}
		data, err := openFile(fsys, key, e)
		if err != nil {
			t.Wipe()
			return nil, err
		}
		t.Files = append(t.Files, File{Path: e.path, Mode: e.mode, Data: data})
	}
	return t, nil
}

// compareTree checks that fsys holds exactly the manifest's entries, with their kinds.
func compareTree(fsys fs.FS, m *manifest) error {
	want := make(map[string]bool, len(m.entries)) // path -> is a directory
	for _, e := range m.entries {
		want[e.path] = e.dir
	}
	seen := make(map[string]bool, len(m.entries))
	var errs []error
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		if p == "." || p == ManifestName {
			return nil
		}
		isDir, listed := want[p]
		switch {
		case !listed:
			errs = append(errs, fmt.Errorf("%w: %s: not in the manifest (a file was added or renamed)", ErrTampered, p))
		case d.Type()&^fs.ModeDir != 0 || d.Type().IsDir() != isDir:
			errs = append(errs, fmt.Errorf("%w: %s: is a %s, the manifest lists a %s", ErrTampered, p, kindOf(d.Type()), kindName(isDir)))
		default:
			seen[p] = true
			return nil
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range m.entries {
		if !seen[e.path] {
			errs = append(errs, fmt.Errorf("%w: %s: listed in the manifest but missing (a file was removed or renamed)", ErrTampered, e.path))
		}
	}
	return errors.Join(errs...)
}

func kindName(dir bool) string {
	if dir {
		return "directory"
	}
	return "regular file"
}

// openFile reads, checks and decrypts one file.
func openFile(fsys fs.FS, key Key, e entry) ([]byte, error) {
	sealed, err := readRegular(fsys, e.path, e.size+nonceSize+gcmOverhead)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTampered, err)
	}
	if got := sha256.Sum256(sealed); subtle.ConstantTimeCompare(got[:], e.hash[:]) != 1 {
		return nil, fmt.Errorf("%w: %s: content changed (its hash differs from the manifest's)", ErrTampered, e.path)
	}
	if int64(len(sealed)) != e.size+nonceSize+gcmOverhead {
		return nil, fmt.Errorf("%w: %s: %d encrypted bytes do not hold the %d bytes the manifest lists", ErrTampered, e.path, len(sealed), e.size)
	}
	aead, err := fileAEAD(key, e.path)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], []byte(e.path))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: authenticated decryption failed", ErrTampered, e.path)
	}
	if plain == nil {
		plain = []byte{}
	}
	return plain, nil
}

// readRegular reads the regular file p, refusing anything longer than limit.
func readRegular(fsys fs.FS, p string, limit int64) ([]byte, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is a %s, not a regular file", p, kindOf(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes is more than the %d expected", p, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than the %d bytes expected", p, limit)
	}
	return data, nil
}

// Wipe overwrites the plaintext held by t with zeros.
func (t *Tree) Wipe() {
	for i := range t.Files {
		clear(t.Files[i].Data)
	}
}

// WriteDir writes the tree under root, an existing directory (for the launcher, a private tmpfs),
// with the tree's modes. It refuses paths that already exist and never follows a path out of
// root.
func (t *Tree) WriteDir(root string) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("fspf: %w", err)
	}
	defer r.Close()
	dirs := slices.Clone(t.Dirs)
	slices.SortFunc(dirs, func(a, b Dir) int { return len(a.Path) - len(b.Path) }) // parents first
	for _, d := range dirs {
		if err := checkPath(d.Path); err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		if err := r.Mkdir(d.Path, 0o700); err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
	}
	for _, f := range t.Files {
		if err := checkPath(f.Path); err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		if err := writeInRoot(r, f); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first, so a read-only parent comes last
		if err := r.Chmod(dirs[i].Path, dirs[i].Mode.Perm()); err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
	}
	return nil
}

func writeInRoot(r *os.Root, f File) error {
	out, err := r.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("fspf: %w", err)
	}
	if _, err := out.Write(f.Data); err != nil {
		_ = out.Close()
		return fmt.Errorf("fspf: write %s: %w", f.Path, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("fspf: close %s: %w", f.Path, err)
	}
	if err := r.Chmod(f.Path, f.Mode.Perm()); err != nil {
		return fmt.Errorf("fspf: %w", err)
	}
	return nil
}
