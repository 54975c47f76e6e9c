// Package dcap parses and verifies Intel SGX DCAP quotes (version 3, ECDSA-P256) in pure Go.
//
// A quote is verified against a pinned root CA (the Intel SGX Root CA for hardware, the
// per-installation simulated root for attest/sim) together with its collateral: the TCB Info
// (v3) and QE Identity (v2) JSON documents and the TCB signing chain that signs both.
// Verification yields an Identity that a policy can be checked against.
package dcap
