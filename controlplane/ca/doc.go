// Package ca generates the keys and certificates that sessions describe and runs the
// control plane's own certificate authority, which issues the workloads' X.509-SVIDs and the
// control plane's TLS server certificates.
//
// Session secrets: GenerateKey makes a private-key secret (P-256 by default, P-384, Ed25519,
// RSA-2048, RSA-3072); IssueCA and IssueLeaf make x509-ca and x509 secrets, signed by an
// issuer or self-signed. On a session update the caller passes the same key again (or calls
// Reissue): the key stays, the serial number and the validity are new.
//
// The control plane's CA: an Authority holds an ECDSA P-256 root for one trust domain. It
// never writes files; MarshalPEM and LoadAuthority let the caller persist it, encrypted at
// rest by the store.
//
// # Simulated TEEs
//
// An SVID issued on the strength of a simulated attestation is visibly marked: its Subject
// carries the organizational unit "attestmesh-simulated-tee", and it carries the non-critical
// extension attestapi.OIDTEE (1.3.6.1.4.1.59999.1.1, a private arc) whose value is the DER UTF8String
// "simulation". Hardware-attested SVIDs carry the same extension with the value "sgx". attestapi.TEEOf
// reads the marking back.
//
// # Attestation binding
//
// A workload binds its key to its quote: the quote's 64-byte REPORTDATA is
// PublicKeyHash(csr.PublicKey) (SHA-256 of the DER SubjectPublicKeyInfo, 32 bytes) followed
// by the control plane's 32-byte nonce. The binding belongs to the attestation API's contract:
// attestapi.BindReportData computes it for the workload and attestapi.CheckReportData checks
// it on the control plane.
//
// # Randomness
//
// Serial numbers are read from the configured io.Reader (crypto/rand by default). Since Go
// 1.26 key generation and signatures always use the crypto library's secure source; tests
// that need determinism use testing/cryptotest.SetGlobalRandom.
package ca
