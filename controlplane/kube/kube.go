// Package kube is the control plane's small client of the Kubernetes API server, for the few
// objects it touches itself (its webhook's caBundle, its store's rollback anchor): a base URL,
// the pod's service-account token and a TLS client that trusts the cluster CA. Errors start with
// "kube: " and carry the API server's message.
package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// APIServer is how the control plane talks to the Kubernetes API server: its base URL, a
// bearer token and a client that trusts it. InCluster fills it from the pod's
// service account.
type APIServer struct {
	URL    string // https://host:port
	Token  string
	Client *http.Client
}

// Service account files in every pod that mounts its token.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster returns the API server as seen from inside a pod.
func InCluster() (*APIServer, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("kube: not in a Kubernetes pod: KUBERNETES_SERVICE_HOST/PORT are unset")
	}
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("kube: service account token: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("kube: service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("kube: service account ca.crt holds no certificate")
	}
	return &APIServer{
		URL:   "https://" + net.JoinHostPort(host, port),
		Token: string(bytes.TrimSpace(token)),
		Client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// StatusError is a non-2xx answer of the API server.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Do sends one request and returns the body of a 2xx answer; any other answer is an error
// wrapping a *StatusError.
func (api *APIServer) Do(ctx context.Context, method, u, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+api.Token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	client := api.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kube: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("kube: %s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(out, &st)
		return nil, fmt.Errorf("kube: %s %s: %w", method, u, &StatusError{Code: resp.StatusCode, Message: st.Message})
	}
	return out, nil
}

// SecretAnchor is a store rollback anchor (store.Anchor) in one Kubernetes Secret, key
// "generation": the chart creates the Secret and lets the control plane get and patch that one
// object. Raises are optimistic (the patch carries the resourceVersion it read), so replicas may
// raise it concurrently and it never goes down.
type SecretAnchor struct {
	API       *APIServer
	Namespace string
	Name      string
}

const anchorKey = "generation"

func (a *SecretAnchor) url() string {
	return a.API.URL + "/api/v1/namespaces/" + a.Namespace + "/secrets/" + a.Name
}

func (a *SecretAnchor) read(ctx context.Context) (uint64, string, error) {
	body, err := a.API.Do(ctx, http.MethodGet, a.url(), "", nil)
	if err != nil {
		return 0, "", err
	}
	var sec struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Data map[string][]byte `json:"data"`
	}
	if err := json.Unmarshal(body, &sec); err != nil {
		return 0, "", fmt.Errorf("kube: decode Secret %s/%s: %w", a.Namespace, a.Name, err)
	}
	v, ok := sec.Data[anchorKey]
	if !ok || len(v) == 0 {
		return 0, sec.Metadata.ResourceVersion, nil
	}
	var gen uint64
	if _, err := fmt.Sscanf(string(v), "%d", &gen); err != nil {
		return 0, "", fmt.Errorf("kube: Secret %s/%s: %q is not a generation", a.Namespace, a.Name, anchorKey)
	}
	return gen, sec.Metadata.ResourceVersion, nil
}

// Load implements store.Anchor.
func (a *SecretAnchor) Load(ctx context.Context) (uint64, error) {
	gen, _, err := a.read(ctx)
	return gen, err
}

// Raise implements store.Anchor.
func (a *SecretAnchor) Raise(ctx context.Context, gen uint64) error {
	for range 8 {
		cur, rv, err := a.read(ctx)
		if err != nil {
			return err
		}
		if cur >= gen {
			return nil
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]string{"resourceVersion": rv},
			"data":     map[string][]byte{anchorKey: fmt.Appendf(nil, "%d", gen)},
		})
		if err != nil {
			return fmt.Errorf("kube: %w", err)
		}
		_, err = a.API.Do(ctx, http.MethodPatch, a.url(), "application/merge-patch+json", patch)
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusConflict {
			continue
		}
		return err
	}
	return fmt.Errorf("kube: Secret %s/%s keeps changing", a.Namespace, a.Name)
}

func (a *SecretAnchor) String() string {
	return "Kubernetes Secret " + a.Namespace + "/" + a.Name
}
