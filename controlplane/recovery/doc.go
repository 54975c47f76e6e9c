// Package recovery seals the store key to the operator's recovery keys, so that a control plane
// whose key is lost can be brought back by a threshold of key holders, and reconstructs it.
//
// The control plane splits the store key with Shamir's secret sharing (package shamir): n
// shares, one per recovery key, any k of which give the key back and fewer of which reveal
// nothing. Each share is encrypted to its key: RSA-OAEP-SHA-256 for RSA keys of 3072 bits or
// more, HPKE (RFC 9180, crypto/hpke: DHKEM over X25519 or P-256, HKDF-SHA-256, AES-256-GCM)
// for X25519 and P-256 keys. The result, a Record, is kept in the store beside the records it
// protects, readable without the store key.
//
// What binds what:
//
//   - each share's ciphertext is bound to the record's random ID, the threshold, its index and
//     its key's fingerprint (the OAEP label, the HPKE info), so ciphertexts cannot be moved
//     between entries or records;
//   - each share is committed to (SHA-256 over the record ID, its index and its value), so a
//     share that decrypts but was substituted is found before reconstruction, and named;
//   - the whole record carries a MAC (HMAC-SHA-256 under a key derived from the store key with
//     HKDF), which the reconstructed key checks: a record changed in any other way (an entry
//     forged by someone who knows only the public keys, another creation time) is refused;
//   - the caller then checks the reconstructed key against the store's own key check value
//     (store.Verify), so a record copied in from another store is refused too.
//
// The workflow when the holders are different people (docs/operations.md, "Recovery"):
// whoever reaches the store exports the record (it holds no secret); each holder decrypts
// their share from it with their private key, sealing it for the way to whoever combines
// (Share.SealTo, to a key the combiner makes for the occasion); the combiner opens the sealed
// shares and reconstructs the key (Combine). A holder's private key never leaves the holder.
package recovery
