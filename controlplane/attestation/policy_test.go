package attestation

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

func TestCheckService(t *testing.T) {
	id := &dcap.Identity{
		MREnclave: bytes.Repeat([]byte{0xaa}, 32), MRSigner: bytes.Repeat([]byte{0xbb}, 32),
		ISVProdID: 7, ISVSVN: 3, TCBStatus: "UpToDate",
	}
	aa, bb, cc := strings.Repeat("aa", 32), strings.Repeat("bb", 32), strings.Repeat("cc", 32)
	tests := []struct {
		name   string
		svc    session.Service
		reason attestapi.Reason
		msg    string
	}{
		{"mrenclave listed", session.Service{MREnclaves: []string{cc, aa}}, attestapi.ReasonNone, ""},
		{"mrenclave not listed", session.Service{MREnclaves: []string{cc}}, attestapi.ReasonMREnclave, "mrenclave mismatch: got " + aa + ", session allows [" + cc + "]"},
		{"nothing accepted", session.Service{Name: "s"}, attestapi.ReasonMREnclave, `service "s" lists no mrenclaves`},
		{"signer variant", session.Service{Attestation: []session.AttestationVariant{{Signer: &session.Signer{MRSigner: bb, ISVProdID: 7, ISVSVN: 2}}}}, attestapi.ReasonNone, ""},
		{"signer svn too low", session.Service{Attestation: []session.AttestationVariant{{Signer: &session.Signer{MRSigner: bb, ISVProdID: 7, ISVSVN: 4}}}}, attestapi.ReasonSigner, "isvsvn too low: got 3, want at least 4"},
		{"signer prodid", session.Service{Attestation: []session.AttestationVariant{{Signer: &session.Signer{MRSigner: bb, ISVProdID: 8}}}}, attestapi.ReasonSigner, "isvprodid mismatch: got 7, want 8"},
		{"signer mrsigner", session.Service{Attestation: []session.AttestationVariant{{Signer: &session.Signer{MRSigner: cc, ISVProdID: 7}}}}, attestapi.ReasonSigner, "mrsigner mismatch: got " + bb},
		{"second variant matches", session.Service{Attestation: []session.AttestationVariant{{MREnclaves: []string{cc}}, {MREnclaves: []string{aa}}}}, attestapi.ReasonNone, ""},
		{"no variant matches", session.Service{Attestation: []session.AttestationVariant{{MREnclaves: []string{cc}}}}, attestapi.ReasonMREnclave, "attestation[0]: mrenclave mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckService(id, &tt.svc)
			assert.Equal(t, tt.reason, ReasonOf(err))
			if tt.reason != attestapi.ReasonNone {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.msg)
			}
		})
	}
}

func TestCheckPlatform(t *testing.T) {
	tol := func(ts ...session.Tolerance) session.AttestationPolicy {
		return session.AttestationPolicy{Tolerate: ts}
	}
	tests := []struct {
		name   string
		id     dcap.Identity
		pol    session.AttestationPolicy
		reason attestapi.Reason
		msg    string
	}{
		{"up to date", dcap.Identity{TCBStatus: "UpToDate"}, tol(), attestapi.ReasonNone, ""},
		{"debug refused", dcap.Identity{Debug: true, TCBStatus: "UpToDate"}, tol(), attestapi.ReasonDebug, `does not tolerate "debug-mode"`},
		{"debug tolerated", dcap.Identity{Debug: true, TCBStatus: "UpToDate"}, tol(session.TolerateDebugMode), attestapi.ReasonNone, ""},
		{"out of date refused", dcap.Identity{TCBStatus: "OutOfDate", AdvisoryIDs: []string{"INTEL-SA-00615"}}, tol(), attestapi.ReasonTCB, `TCB status OutOfDate (advisories INTEL-SA-00615) needs "outdated-tcb"`},
		{"out of date tolerated", dcap.Identity{TCBStatus: "OutOfDate"}, tol(session.TolerateOutdatedTCB), attestapi.ReasonNone, ""},
		{"hardening refused", dcap.Identity{TCBStatus: "SWHardeningNeeded"}, tol(session.TolerateOutdatedTCB), attestapi.ReasonTCB, `needs "software-hardening-needed"`},
		{"both needed, one given", dcap.Identity{TCBStatus: "OutOfDateConfigurationNeeded"}, tol(session.TolerateOutdatedTCB), attestapi.ReasonTCB, `needs "insecure-configuration"`},
		{"unknown status", dcap.Identity{TCBStatus: "Revoked"}, tol(session.Tolerances...), attestapi.ReasonTCB, "never tolerated"},

		// SCONE's tolerances map to statuses and advisories: a status tolerance never accepts an
		// advisory by itself; hyperthreading and insecure-igpu accept theirs, and with them the
		// ConfigurationNeeded they cause; ignore_advisories accepts the rest.
		{"hyperthreading alone accepts an HT-only configuration level",
			dcap.Identity{TCBStatus: "ConfigurationNeeded", AdvisoryIDs: []string{"INTEL-SA-00161", "INTEL-SA-00233"}}, tol(session.TolerateHyperthreading), attestapi.ReasonNone, ""},
		{"insecure-configuration alone does not accept hyperthreading advisories",
			dcap.Identity{TCBStatus: "ConfigurationNeeded", AdvisoryIDs: []string{"INTEL-SA-00161"}}, tol(session.TolerateInsecureConfiguration),
			attestapi.ReasonTCB, "advisory INTEL-SA-00161 is neither ignored (security.attestation.ignore_advisories) nor accepted by a tolerance"},
		{"hyperthreading does not cover another configuration advisory",
			dcap.Identity{TCBStatus: "ConfigurationNeeded", AdvisoryIDs: []string{"INTEL-SA-00161", "INTEL-SA-00289"}}, tol(session.TolerateHyperthreading),
			attestapi.ReasonTCB, `needs "insecure-configuration"`},
		{"insecure-igpu",
			dcap.Identity{TCBStatus: "ConfigurationNeeded", AdvisoryIDs: []string{"INTEL-SA-00219"}}, tol(session.TolerateInsecureIGPU), attestapi.ReasonNone, ""},
		{"software hardening with advisories, tolerated but not ignored",
			dcap.Identity{TCBStatus: "SWHardeningNeeded", AdvisoryIDs: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}, tol(session.TolerateSoftwareHardeningNeeded),
			attestapi.ReasonTCB, "advisory INTEL-SA-00615 is neither ignored"},
		{"software hardening with its advisories ignored",
			dcap.Identity{TCBStatus: "SWHardeningNeeded", AdvisoryIDs: []string{"INTEL-SA-00615", "INTEL-SA-00657"}},
			session.AttestationPolicy{Tolerate: []session.Tolerance{session.TolerateSoftwareHardeningNeeded}, IgnoreAdvisories: []string{"INTEL-SA-00615", "intel-sa-00657"}},
			attestapi.ReasonNone, ""},
		{"ignoring an advisory does not tolerate the status",
			dcap.Identity{TCBStatus: "SWHardeningNeeded", AdvisoryIDs: []string{"INTEL-SA-00615"}}, session.AttestationPolicy{IgnoreAdvisories: []string{"*"}},
			attestapi.ReasonTCB, `needs "software-hardening-needed"`},
		{"every advisory ignored with *",
			dcap.Identity{TCBStatus: "OutOfDateConfigurationNeeded", AdvisoryIDs: []string{"INTEL-SA-00586", "INTEL-SA-00161"}},
			session.AttestationPolicy{Tolerate: []session.Tolerance{session.TolerateOutdatedTCB, session.TolerateInsecureConfiguration}, IgnoreAdvisories: []string{"*"}},
			attestapi.ReasonNone, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPlatform(&tt.id, tt.pol)
			assert.Equal(t, tt.reason, ReasonOf(err), "%v", err)
			if tt.reason != attestapi.ReasonNone {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.msg)
				st := toStatus(err)
				assert.NotContains(t, st.Error(), "security.attestation", "the caller learns the status, not the session's tolerances")
				assert.Contains(t, st.Error(), string(tt.reason))
			}
		})
	}
}
