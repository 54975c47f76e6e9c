package launch

// FSPFDecrypter authenticates and decrypts the protected file system tree stored encrypted in
// dir, with the session's fspf key and tag. It must hold the whole plaintext in memory when it
// returns: stage 2 then mounts a tmpfs over dir, which hides the encrypted files. A tag mismatch
// (a changed, added, removed or renamed file) is an error that says so, without key or contents.
//
// attest/fspf provides the implementation; the program's main passes it to MaybeStage2.
type FSPFDecrypter func(dir, key, tag string) (PlaintextTree, error)

// PlaintextTree is a decrypted tree held in memory.
type PlaintextTree interface {
	// Materialize writes the tree's directories and files under root.
	Materialize(root string) error
}
