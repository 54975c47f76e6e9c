package mgmtapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// APIError is a refusal from the management API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is the management API, e.g. https://127.0.0.1:8081.
	URL string
	// Roots verifies the control plane's server certificate (its CA bundle).
	Roots *x509.CertPool
	// Identity is the client certificate; a zero value sends none (only public endpoints
	// then work).
	Identity tls.Certificate
	// Timeout bounds each request; zero means 30 s.
	Timeout time.Duration
}

// Client talks to the management API. Safe for concurrent use.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("mgmtapi: control plane URL %q: want https://host:port", cfg.URL)
	}
	if cfg.Roots == nil {
		return nil, errors.New("mgmtapi: no CA bundle to verify the control plane (--ca-file)")
	}
	tlsCfg := &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}
	if cfg.Identity.Certificate != nil {
		id := cfg.Identity
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &id, nil }
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &Client{
		base: strings.TrimSuffix(cfg.URL, "/"),
		http: &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tlsCfg}},
	}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("mgmtapi: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("mgmtapi: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("mgmtapi: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	switch v := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*v = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("mgmtapi: %s %s: decoding the answer: %w", method, path, err)
		}
		return nil
	}
}

// Create uploads a new session.
func (c *Client) Create(ctx context.Context, doc []byte) (*SessionResponse, error) {
	var out SessionResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/sessions", doc, &out)
}

// Update replaces session name with doc (which must carry the predecessor).
func (c *Client) Update(ctx context.Context, name string, doc []byte) (*SessionResponse, error) {
	var out SessionResponse
	return &out, c.do(ctx, http.MethodPut, "/v1/sessions/"+name, doc, &out)
}

// Get reads a session.
func (c *Client) Get(ctx context.Context, name string) (*SessionResponse, error) {
	var out SessionResponse
	return &out, c.do(ctx, http.MethodGet, "/v1/sessions/"+name, nil, &out)
}

// Delete removes a session (see the control plane's rules: its updaters, or its namespace's).
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+name, nil, nil)
}

// List lists the sessions the client may read.
func (c *Client) List(ctx context.Context) ([]SessionResponse, error) {
	var out []SessionResponse
	return out, c.do(ctx, http.MethodGet, "/v1/sessions", nil, &out)
}

// Public reads the public value of an export_public secret.
func (c *Client) Public(ctx context.Context, sessionName, secret string) ([]byte, error) {
	var out []byte
	return out, c.do(ctx, http.MethodGet, "/v1/public/"+sessionName+"/"+secret, nil, &out)
}

// PutMesh registers a mesh (a JSON mgmtapi.Registration).
func (c *Client) PutMesh(ctx context.Context, name string, doc []byte) error {
	return c.do(ctx, http.MethodPut, "/v1/meshes/"+name, doc, nil)
}

// DeleteMesh removes a mesh registration.
func (c *Client) DeleteMesh(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/meshes/"+name, nil, nil)
}

// LoadOrCreateIdentity loads the client identity (client.crt, client.key) from dir, creating a
// self-signed ECDSA P-256 identity there (key mode 0600) on first use, as SCONE's CLI does.
// The control plane knows a client by its public key: keep the key to keep access to the
// sessions it created.
func LoadOrCreateIdentity(dir string) (tls.Certificate, error) {
	crtPath, keyPath := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if cert, err := tls.LoadX509KeyPair(crtPath, keyPath); err == nil {
		return cert, nil
	} else if _, statErr := os.Stat(keyPath); statErr == nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity in %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "attestmesh client " + host},
		NotBefore:    time.Now().Add(-5 * time.Minute),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	if err := os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil { //nolint:gosec // a certificate is public
		return tls.Certificate{}, fmt.Errorf("mgmtapi: client identity: %w", err)
	}
	return tls.LoadX509KeyPair(crtPath, keyPath)
}
