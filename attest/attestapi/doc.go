// Package attestapi is the attestation API's contract, the one both sides share: the control
// plane serves it (controlplane/attestation), workloads call it (the launcher and the sidecar in
// proxy/). It owns every wire fact of attestation:
//
//   - the protocol, in attestationpb (gRPC over TLS, default port 18765): GetNonce, then Attest
//     with a quote and a CSR;
//   - the client (Dial, Client.Attest), which pins the control plane's CA and its SPIFFE ID;
//   - config IDs ("SESSION/SERVICE", the session may hold '/') and the SPIFFE ID each names
//     (SplitConfigID, SPIFFEID, ControlPlaneID);
//   - the REPORTDATA binding of a quote to the workload's key and the control plane's nonce
//     (BindReportData, CheckReportData), the same for hardware and simulated quotes;
//   - the TEE marking of an SVID (TEEOf, TEEExtension): an identity resting on the simulated
//     platform is visibly marked;
//   - the refusal reasons (Reason), a closed set that callers may branch on and metrics count.
//
// It imports nothing of the control plane, so that the data plane does not either.
package attestapi
