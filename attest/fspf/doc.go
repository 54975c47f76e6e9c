// Package fspf is the protected file system: a directory tree encrypted file by file, with a tag
// over the whole tree, so that only an attested service (which receives the key and the tag from
// the control plane) can read the code, and so that a changed, added, removed or renamed file
// stops the service from starting. It plays the role of SCONE's file-system protection file.
//
// # Format (version 1)
//
// Encrypt writes DST with the same relative layout as SRC. Each regular file becomes
//
//	nonce (12 random bytes) || AES-256-GCM ciphertext || GCM tag (16 bytes)
//
// under a per-file key derived from the tree key with HKDF-SHA256 (no salt, info
// "attestmesh-fspf v1 file" || 0x00 || relative path), with the relative path also bound as
// additional authenticated data. A file moved to another path therefore fails to decrypt even
// with a forged manifest. Directories are created as directories.
//
// DST/.fspf is the manifest. It holds no secret, so it is plaintext, one entry per line in
// ascending byte order of the slash-separated relative path:
//
//	attestmesh-fspf v1
//	key-check <hex of HKDF-SHA256(key, info "attestmesh-fspf v1 key-check"), 32 bytes>
//	d <mode, 4 octal digits> <path>
//	f <mode> <plaintext size> <hex SHA-256 of the encrypted file> <path>
//
// The tag is SHA-256 of the manifest's exact bytes. The parser accepts only the canonical form
// (parsing and printing again gives the same bytes), so the tag commits to every path, mode, size
// and ciphertext of the tree: a changed byte changes a ciphertext hash, an added, removed or
// renamed file changes the entry list. The key check lets Decrypt tell a wrong key from a changed
// tree.
//
// Decrypt checks the tag first, then the key, then that the directory holds exactly the
// manifest's entries (no symlinks, devices or extra files), then each file's hash and its
// authenticated decryption, and returns the plaintext in memory; Tree.WriteDir writes it under a
// directory such as a private tmpfs.
package fspf
