package attestapi

// Reason is why an attestation was refused: a closed set, the metric label of every refusal
// and what a refused caller is told first ("attestation refused (<reason>): ...").
type Reason string

// Refusal reasons. The set is closed: metric labels must stay bounded.
const (
	ReasonNone                Reason = ""
	ReasonMalformed           Reason = "malformed_request"
	ReasonUnknownSession      Reason = "unknown_session"
	ReasonUnknownService      Reason = "unknown_service"
	ReasonNonceInvalid        Reason = "nonce_invalid"
	ReasonNonceReplayed       Reason = "nonce_replayed"
	ReasonNonceExpired        Reason = "nonce_expired"
	ReasonNonceCapacity       Reason = "nonce_capacity"
	ReasonCSRInvalid          Reason = "csr_invalid"
	ReasonQuoteInvalid        Reason = "quote_invalid"
	ReasonSimulationForbidden Reason = "simulation_not_allowed"
	ReasonReportData          Reason = "reportdata_mismatch"
	ReasonMREnclave           Reason = "mrenclave_mismatch"
	ReasonSigner              Reason = "signer_mismatch"
	ReasonDebug               Reason = "debug_not_tolerated"
	ReasonTCB                 Reason = "tcb_not_tolerated"
	ReasonSidecarMeasurement  Reason = "sidecar_measurement"
	ReasonSidecarGrant        Reason = "sidecar_grant"
	ReasonImport              Reason = "import_refused"
	ReasonRevoked             Reason = "revoked"
	ReasonRateLimited         Reason = "rate_limited"
	ReasonInternal            Reason = "internal"
)
