package evidence

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
)

// Policy is what a client requires of the control plane's evidence.
type Policy struct {
	// MREnclave is the measurement the control plane must have: in simulation what
	// `attestmesh measure` prints for its binary; on hardware the enclave's MRENCLAVE (under
	// Gramine, that of the signed manifest).
	MREnclave [32]byte
	// TEE is the kind of evidence accepted: attestapi.TEESGX or attestapi.TEESimulation.
	TEE attestapi.TEE
	// Root pins the root of the quote's PCK chain. Hardware: nil means dcap.IntelRoot().
	// Simulation: nil takes the root that the evidence carries (the drill: it proves nothing
	// against the control plane's operator); set, the evidence must carry this one.
	Root *x509.Certificate
	// Collateral supplies the TCB Info, QE Identity, TCB signing chain and CRLs for a
	// platform's FMSPC; required for hardware evidence (attestation.DirCollateral reads the
	// --collateral-dir layout). Simulated evidence brings its own.
	Collateral func(ctx context.Context, fmspc string) (dcap.Collateral, error)
	// CollateralMaxAge is the freshness policy for TCB Info and QE Identity (dcap.Options).
	CollateralMaxAge time.Duration
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// SkipRevocation verifies without CRLs: only for public test vectors, whose CRLs are not
	// at hand.
	SkipRevocation bool
}

// Result is a verified control plane.
type Result struct {
	TEE      attestapi.TEE
	Identity *dcap.Identity
	// CA is the attested CA certificate: the one to pin.
	CA *x509.Certificate
	// Root is the root the quote chained to; RootFromEvidence says it came with the evidence
	// (simulation without a pinned root).
	Root             *x509.Certificate
	RootFromEvidence bool
	// Server is the TLS server certificate of the connection, verified against CA.
	Server *x509.Certificate
}

// Verify checks ev, fetched with nonce over a TLS connection whose server presented peer, as
// the package documentation lists, and returns what it verified. Every refusal names what
// differs, with both values where there are two.
func Verify(ctx context.Context, ev *Evidence, nonce [32]byte, peer []*x509.Certificate, p Policy) (*Result, error) {
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	// 1. The TEE the caller asked for.
	switch {
	case p.TEE != attestapi.TEESGX && p.TEE != attestapi.TEESimulation:
		return nil, fmt.Errorf("evidence: policy: TEE %q, want %q or %q", p.TEE, attestapi.TEESGX, attestapi.TEESimulation)
	case ev.TEE != p.TEE && p.TEE == attestapi.TEESGX:
		return nil, errors.New("evidence: the control plane presented simulated evidence, but hardware (sgx) evidence was required: " +
			"it does not run in an enclave, or runs with --simulation and no /dev/attestation")
	case ev.TEE != p.TEE:
		return nil, fmt.Errorf("evidence: the control plane presented %s evidence, but simulated evidence was expected", ev.TEE)
	}

	// 2. The quote, against the pinned root and its collateral.
	res := &Result{TEE: ev.TEE, CA: ev.CA, Root: p.Root}
	var collateral dcap.Collateral
	if ev.TEE == attestapi.TEESGX {
		if res.Root == nil {
			res.Root = dcap.IntelRoot()
		}
		if p.Collateral == nil {
			return nil, errors.New("evidence: hardware evidence needs Intel's collateral (TCB Info, QE Identity, their chain and CRLs), and none was given")
		}
		fmspc, err := quoteFMSPC(ev.Quote)
		if err != nil {
			return nil, fmt.Errorf("evidence: %w", err)
		}
		if collateral, err = p.Collateral(ctx, fmspc); err != nil {
			return nil, fmt.Errorf("evidence: collateral for the control plane's platform (FMSPC %s): %w", fmspc, err)
		}
	} else {
		if ev.SimulatedRoot == nil || ev.Collateral == nil {
			return nil, errors.New("evidence: simulated evidence without its simulated root or collateral")
		}
		switch {
		case res.Root == nil:
			res.Root, res.RootFromEvidence = ev.SimulatedRoot, true
		case !res.Root.Equal(ev.SimulatedRoot):
			return nil, fmt.Errorf("evidence: the simulated root differs from the pinned one: pinned SHA-256 %s, the control plane's %s "+
				"(another simulated platform: a new installation, or another control plane)", Fingerprint(res.Root), Fingerprint(ev.SimulatedRoot))
		}
		collateral = *ev.Collateral
	}
	id, err := dcap.Verify(ev.Quote, collateral, dcap.Options{Root: res.Root, Now: now, CollateralMaxAge: p.CollateralMaxAge, SkipRevocation: p.SkipRevocation})
	if err != nil {
		return nil, fmt.Errorf("evidence: the control plane's quote does not verify: %w", err)
	}
	res.Identity = id

	// 3. and 4. Which enclave.
	if id.Debug {
		return nil, fmt.Errorf("evidence: the control plane runs in a debug enclave (MRENCLAVE %s): its memory is open to the host", id.MREnclave)
	}
	if !bytes.Equal(id.MREnclave, p.MREnclave[:]) {
		return nil, fmt.Errorf("evidence: the control plane's measurement differs: expected MRENCLAVE %x, got %s: it runs another binary than the one expected",
			p.MREnclave[:], id.MREnclave)
	}

	// 5. This CA, this request.
	want := ReportData(ev.CA, nonce)
	got := []byte(id.ReportData)
	if len(got) != len(want) {
		return nil, fmt.Errorf("evidence: REPORTDATA is %d bytes, want %d", len(got), len(want))
	}
	keyOK, nonceOK := bytes.Equal(got[:32], want[:32]), bytes.Equal(got[32:], want[32:])
	switch {
	case !keyOK:
		also := ""
		if !nonceOK {
			also = ", nor this request's nonce"
		}
		return nil, fmt.Errorf("evidence: REPORTDATA does not bind the CA that the evidence carries%s: its first 32 bytes are %x, "+
			"SHA-256 of the public key of CA %q is %x", also, got[:32], ev.CA.Subject, want[:32])
	case !nonceOK:
		return nil, fmt.Errorf("evidence: REPORTDATA does not carry this request's nonce: got %x, sent %x (evidence replayed from an earlier request)",
			got[32:], want[32:])
	}

	// 6. The TLS server is a holder of a key that CA certified.
	if len(peer) == 0 {
		return nil, errors.New("evidence: the TLS server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ev.CA)
	if _, err := peer[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("evidence: the TLS server certificate (subject %q, issuer %q) does not chain to the attested CA %q (SHA-256 %s): %w "+
			"(whoever answered relayed another control plane's evidence)", peer[0].Subject, peer[0].Issuer, ev.CA.Subject, Fingerprint(ev.CA), err)
	}
	res.Server = peer[0]
	return res, nil
}

// Fingerprint is the SHA-256 of a certificate's DER, in hex, as `openssl x509 -fingerprint
// -sha256` prints it (without the colons, lower case).
func Fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// NewNonce returns a fresh random nonce.
func NewNonce() ([32]byte, error) {
	var n [32]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("evidence: nonce: %w", err)
	}
	return n, nil
}

// Fetch asks the management API at addr (host:port) for its evidence with nonce, over TLS
// without verifying the server yet (that is what the evidence is for), and returns the
// evidence and the certificates the TLS server presented on that connection.
func Fetch(ctx context.Context, addr string, nonce [32]byte) (*Evidence, []*x509.Certificate, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, nil, fmt.Errorf("evidence: control plane address %q: want host:port: %w", addr, err)
	}
	url := "https://" + addr + Path + "?nonce=" + hex.EncodeToString(nonce[:])
	tr := &http.Transport{
		// Not verified here: Verify checks the presented chain against the attested CA.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // verified against the attested CA by Verify
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("evidence: %w", err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("evidence: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("evidence: GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 512 {
			msg = msg[:512] + "..."
		}
		return nil, nil, fmt.Errorf("evidence: GET %s: %s: %s", url, resp.Status, msg)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, nil, fmt.Errorf("evidence: GET %s: no TLS server certificate", url)
	}
	ev, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (from %s)", err, url)
	}
	return ev, resp.TLS.PeerCertificates, nil
}

// Attest fetches the evidence of the control plane at addr with a fresh nonce and verifies it
// under p.
func Attest(ctx context.Context, addr string, p Policy) (*Result, error) {
	nonce, err := NewNonce()
	if err != nil {
		return nil, err
	}
	ev, peer, err := Fetch(ctx, addr, nonce)
	if err != nil {
		return nil, err
	}
	return Verify(ctx, ev, nonce, peer, p)
}
