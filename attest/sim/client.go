package sim

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

const (
	// maxResponseBody bounds what the Client reads; a quote is about 6 KiB.
	maxResponseBody = 1 << 20
	clientTimeout   = 30 * time.Second
)

// Client asks a LAS for quotes, collateral and its root. Its zero value talks to
// ResolveLASAddr(""). A Client holds no connections between calls and is safe for concurrent
// use.
type Client struct {
	// Addr is "host:port" or "unix:/path"; empty means ResolveLASAddr("").
	Addr string
}

// Quote asks the LAS to quote r.
func (c Client) Quote(ctx context.Context, r Report) ([]byte, error) {
	body, err := json.Marshal(encodeQuoteRequest(r))
	if err != nil {
		return nil, fmt.Errorf("sim: encode quote request: %w", err)
	}
	var resp quoteResponse
	if err := c.do(ctx, http.MethodPost, "/v1/quote", body, &resp); err != nil {
		return nil, err
	}
	quote, err := base64.StdEncoding.DecodeString(resp.Quote)
	if err != nil {
		return nil, fmt.Errorf("sim: LAS quote response: %w", err)
	}
	if len(quote) < dcap.HeaderSize+dcap.ReportBodySize {
		return nil, fmt.Errorf("sim: LAS quote response: quote is %d bytes, want at least %d", len(quote), dcap.HeaderSize+dcap.ReportBodySize)
	}
	return quote, nil
}

// Collateral fetches the platform's current TCB Info, QE Identity, TCB signing chain and CRLs.
func (c Client) Collateral(ctx context.Context) (dcap.Collateral, error) {
	var resp collateralResponse
	if err := c.do(ctx, http.MethodGet, "/v1/collateral", nil, &resp); err != nil {
		return dcap.Collateral{}, err
	}
	if resp.TCBInfo == "" || resp.QEIdentity == "" || resp.TCBSignChain == "" {
		return dcap.Collateral{}, errors.New("sim: LAS collateral response: a document is missing")
	}
	return dcap.Collateral{
		TCBInfo: []byte(resp.TCBInfo), QEIdentity: []byte(resp.QEIdentity), TCBSignChain: []byte(resp.TCBSignChain),
		RootCACRL: resp.RootCACRL, PCKCRL: resp.PCKCRL,
	}, nil
}

// Root fetches the platform's simulated root CA. Pinning a root fetched this way trusts the
// LAS at first use; the control plane should take the root from the platform it created.
func (c Client) Root(ctx context.Context) (*x509.Certificate, error) {
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/v1/root", nil, &raw); err != nil {
		return nil, err
	}
	b, rest := pem.Decode(raw)
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("sim: LAS root response: want exactly one PEM CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sim: LAS root response: %w", err)
	}
	return cert, nil
}

// do sends one request and decodes a 200 response into out (JSON, or raw bytes for *[]byte).
func (c Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	network, address, err := splitAddr(ResolveLASAddr(c.Addr))
	if err != nil {
		return err
	}
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		},
	}
	defer tr.CloseIdleConnections()
	host := address
	if network == "unix" {
		host = "las"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sim: LAS %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: tr, Timeout: clientTimeout}).Do(req)
	if err != nil {
		return fmt.Errorf("sim: LAS %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return fmt.Errorf("sim: LAS %s %s: read response: %w", method, path, err)
	}
	if len(data) > maxResponseBody {
		return fmt.Errorf("sim: LAS %s %s: response larger than %d bytes", method, path, maxResponseBody)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("sim: LAS %s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return fmt.Errorf("sim: LAS %s %s: %s", method, path, resp.Status)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("sim: LAS %s %s: decode response: %w", method, path, err)
	}
	return nil
}
