package fspf

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Encrypt encrypts the tree under src into dst, which must be missing or an empty directory,
// and returns the new random tree key and the tag. src may hold only regular files and
// directories. rand is the source of the key and the nonces; nil means crypto/rand. On failure
// Encrypt removes what it wrote under dst.
func Encrypt(src, dst string, rand io.Reader) (Key, Tag, error) {
	if rand == nil {
		rand = cryptoRand{}
	}
	srcAbs, err := absResolved(src)
	if err != nil {
		return Key{}, Tag{}, err
	}
	fi, err := os.Stat(srcAbs)
	if err != nil {
		return Key{}, Tag{}, fmt.Errorf("fspf: source: %w", err)
	}
	if !fi.IsDir() {
		return Key{}, Tag{}, fmt.Errorf("fspf: source %s is not a directory", src)
	}
	dstAbs, err := absResolved(dst)
	if err != nil {
		return Key{}, Tag{}, err
	}
	if rel, err := filepath.Rel(srcAbs, dstAbs); err == nil && !escapes(rel) {
		return Key{}, Tag{}, fmt.Errorf("fspf: destination %s is inside the source %s", dst, src)
	}
	entries, err := scan(src, srcAbs)
	if err != nil {
		return Key{}, Tag{}, err
	}
	created, err := prepareDst(dst)
	if err != nil {
		return Key{}, Tag{}, err
	}
	k, t, err := encryptInto(srcAbs, dst, entries, rand)
	if err != nil {
		cleanup(dst, created)
		return Key{}, Tag{}, err
	}
	return k, t, nil
}

type cryptoRand struct{}

func (cryptoRand) Read(p []byte) (int, error) { return rand.Read(p) }

func escapes(rel string) bool {
	return rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel)
}

// absResolved returns p absolute, with symlinks resolved when p exists.
func absResolved(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("fspf: %w", err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	return abs, nil
}

// scan lists src's entries in canonical order, refusing anything but files and directories.
func scan(src, srcAbs string) ([]entry, error) {
	var entries []entry
	err := filepath.WalkDir(srcAbs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		if p == srcAbs {
			return nil
		}
		rel, err := filepath.Rel(srcAbs, p)
		if err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		rel = filepath.ToSlash(rel)
		shown := filepath.Join(src, rel)
		if err := checkPath(rel); err != nil {
			return fmt.Errorf("fspf: %s: cannot be encrypted: %w", shown, err)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("fspf: %w", err)
		}
		switch {
		case info.IsDir():
			entries = append(entries, entry{dir: true, mode: info.Mode().Perm(), path: rel})
		case info.Mode().IsRegular():
			if info.Size() > MaxFileSize {
				return fmt.Errorf("fspf: %s: %d bytes is more than %d", shown, info.Size(), MaxFileSize)
			}
			entries = append(entries, entry{mode: info.Mode().Perm(), size: info.Size(), path: rel})
		default:
			return fmt.Errorf("fspf: %s: is a %s; only regular files and directories can be encrypted", shown, kindOf(info.Mode()))
		}
		if len(entries) > MaxEntries {
			return fmt.Errorf("fspf: %s: more than %d entries", src, MaxEntries)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.path, b.path) })
	return entries, nil
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	default:
		return "special file"
	}
}

// prepareDst makes sure dst is an empty directory and reports whether it created it.
func prepareDst(dst string) (bool, error) {
	fi, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dst, 0o755); err != nil { //nolint:gosec // G301: the encrypted tree holds no secret
			return false, fmt.Errorf("fspf: create destination: %w", err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("fspf: destination: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("fspf: destination %s exists and is not a directory", dst)
	}
	des, err := os.ReadDir(dst)
	if err != nil {
		return false, fmt.Errorf("fspf: destination: %w", err)
	}
	if len(des) > 0 {
		return false, fmt.Errorf("fspf: destination %s is not empty; encrypt into a fresh directory", dst)
	}
	return false, nil
}

func cleanup(dst string, created bool) {
	if created {
		_ = os.RemoveAll(dst)
		return
	}
	des, _ := os.ReadDir(dst)
	for _, de := range des {
		_ = os.RemoveAll(filepath.Join(dst, de.Name()))
	}
}

func encryptInto(srcAbs, dst string, entries []entry, rand io.Reader) (Key, Tag, error) {
	var k Key
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return Key{}, Tag{}, fmt.Errorf("fspf: generate key: %w", err)
	}
	m := &manifest{entries: entries}
	var err error
	if m.keyCheck, err = keyCheck(k); err != nil {
		return Key{}, Tag{}, err
	}
	for i := range m.entries {
		e := &m.entries[i]
		out := filepath.Join(dst, filepath.FromSlash(e.path))
		if e.dir {
			if err := os.Mkdir(out, 0o755); err != nil { //nolint:gosec // G301: the encrypted tree holds no secret
				return Key{}, Tag{}, fmt.Errorf("fspf: %w", err)
			}
			continue
		}
		plain, err := os.ReadFile(filepath.Join(srcAbs, filepath.FromSlash(e.path)))
		if err != nil {
			return Key{}, Tag{}, fmt.Errorf("fspf: %w", err)
		}
		if int64(len(plain)) != e.size {
			return Key{}, Tag{}, fmt.Errorf("fspf: %s: changed while it was being encrypted", e.path)
		}
		sealed, err := sealFile(k, e.path, plain, rand)
		clear(plain)
		if err != nil {
			return Key{}, Tag{}, err
		}
		e.hash = sha256.Sum256(sealed)
		if err := writeNew(out, sealed, 0o644); err != nil {
			return Key{}, Tag{}, err
		}
	}
	data := m.marshal()
	if err := writeNew(filepath.Join(dst, ManifestName), data, 0o644); err != nil {
		return Key{}, Tag{}, err
	}
	return k, Tag(sha256.Sum256(data)), nil
}

func fileAEAD(k Key, p string) (cipher.AEAD, error) {
	fk, err := fileKey(k, p)
	if err != nil {
		return nil, err
	}
	defer clear(fk)
	block, err := aes.NewCipher(fk)
	if err != nil {
		return nil, fmt.Errorf("fspf: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("fspf: %w", err)
	}
	return aead, nil
}

func sealFile(k Key, p string, plain []byte, rand io.Reader) ([]byte, error) {
	aead, err := fileAEAD(k, p)
	if err != nil {
		return nil, err
	}
	out := make([]byte, nonceSize, nonceSize+len(plain)+gcmOverhead)
	if _, err := io.ReadFull(rand, out); err != nil {
		return nil, fmt.Errorf("fspf: generate nonce: %w", err)
	}
	return aead.Seal(out, out[:nonceSize], plain, []byte(p)), nil
}

func writeNew(p string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("fspf: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("fspf: write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("fspf: close %s: %w", p, err)
	}
	return nil
}
