// Package sim is a simulated Intel SGX platform: it emits byte-exact DCAP version 3 quotes
// (ECDSA-P256, certification data type 5) and the collateral that verifies them, so that the
// whole attestation path of attest/dcap runs unchanged on machines without SGX. Only the
// trusted root differs: a Platform creates its own per-installation "attestmesh simulated SGX
// Root CA", under which it issues a PCK Platform CA, a PCK certificate carrying Intel's SGX
// extensions (FMSPC, PCE ID, CPUSVN components, PCESVN, PPID), and a TCB signing certificate
// that signs the simulated TCB Info and QE Identity.
//
// SIMULATION GIVES NO SECURITY. A Platform, and the LAS that serves it, signs whatever
// measurement the caller reports: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, the DEBUG attribute
// and REPORTDATA are all taken from the request. A simulated quote proves only that its caller
// could reach the LAS. Verifiers must pin the simulated root only for sessions that accept
// simulation explicitly, and mark every identity that results from it as simulated.
//
// # Local attestation service
//
// As in SCONE, a workload asks a local attestation service (LAS) on its node for a quote. LAS
// is an HTTP/JSON server:
//
//	POST /v1/quote       {"mrenclave":HEX32,"mrsigner":HEX32,"isvprodid":N,"isvsvn":N,
//	                      "debug":BOOL,"reportdata":HEX64} -> {"quote":BASE64}
//	GET  /v1/collateral  -> {"tcb_info":JSON,"qe_identity":JSON,"tcb_sign_chain":PEM}
//	GET  /v1/root        -> the simulated root CA certificate (PEM)
//
// It listens on loopback TCP (DefaultLASAddr, 127.0.0.1:18766) or on a Unix socket given as
// "unix:/path". The same address form works for a process on the machine and for a pod: a pod
// mounts the socket's directory with a hostPath volume (or uses the host network for TCP). The
// launcher and the sidecar take the address from a flag, else from the ATTESTMESH_LAS_ADDR
// environment variable (LASAddrEnv), else the default; see ResolveLASAddr. Client speaks the
// protocol.
//
// # Binding
//
// BindReportData and CheckReportData implement the binding of the attestation protocol: REPORTDATA holds
// SHA-256 of the CSR's public key (its DER SubjectPublicKeyInfo) in the first 32 bytes and the
// control plane's nonce in the last 32. They apply to hardware and simulated quotes alike.
package sim
