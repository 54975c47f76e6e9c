// Package dcap parses and verifies Intel SGX DCAP quotes (version 3, ECDSA-P256) in pure Go.
//
// A quote is verified against a pinned root CA (IntelRoot for hardware, the per-installation
// simulated root for attest/sim) together with its collateral: the TCB Info (v3) and QE
// Identity (v2) JSON documents and the TCB signing chain that signs both. Verification yields
// an Identity that a policy can be checked against, or an *Error whose Reason (ReasonOf) is
// one of a small fixed set, fit for a metric label.
//
// The writing side is here too, so that a simulator produces exactly what Verify reads:
// Quote.Marshal for the wire format, PCKExtensions.Marshal for the PCK certificate's SGX
// extension, and SignTCBInfo and SignQEIdentity for the collateral (ECDSA P-256 over SHA-256 of
// the exact bytes of the "tcbInfo" / "enclaveIdentity" value, hex r || s).
package dcap
