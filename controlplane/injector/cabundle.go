package injector

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
	"strconv"
	"time"
)

// APIServer is how the control plane talks to the Kubernetes API server: its base URL, a
// bearer token and a client that trusts it. InClusterAPIServer fills it from the pod's
// service account.
type APIServer struct {
	URL    string // https://host:port
	Token  string
	Client *http.Client
}

// Service account files in every pod that mounts its token.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InClusterAPIServer returns the API server as seen from inside a pod.
func InClusterAPIServer() (*APIServer, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("injector: not in a Kubernetes pod: KUBERNETES_SERVICE_HOST/PORT are unset")
	}
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("injector: service account token: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("injector: service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("injector: service account ca.crt holds no certificate")
	}
	return &APIServer{
		URL:   "https://" + net.JoinHostPort(host, port),
		Token: string(bytes.TrimSpace(token)),
		Client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// PatchCABundle sets caBundle to caPEM in every webhook of the MutatingWebhookConfiguration
// name (the chart's RBAC allows get and patch on that one object only). It is what the control
// plane does at start when neither the chart's values nor cert-manager provide the bundle.
func PatchCABundle(ctx context.Context, api *APIServer, name string, caPEM []byte) error {
	u := api.URL + "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + name
	var cfg struct {
		Webhooks []struct {
			Name         string `json:"name"`
			ClientConfig struct {
				CABundle []byte `json:"caBundle"`
			} `json:"clientConfig"`
		} `json:"webhooks"`
	}
	body, err := api.do(ctx, http.MethodGet, u, "", nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return fmt.Errorf("injector: decode MutatingWebhookConfiguration %s: %w", name, err)
	}
	var ops []PatchOp
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			continue
		}
		// Test the webhook's name so that a concurrent change of the list fails the patch.
		base := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops,
			PatchOp{Op: "test", Path: base + "/name", Value: w.Name},
			PatchOp{Op: "add", Path: base + "/clientConfig/caBundle", Value: caPEM})
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("injector: encode caBundle patch: %w", err)
	}
	_, err = api.do(ctx, http.MethodPatch, u, "application/json-patch+json", patch)
	return err
}

func (api *APIServer) do(ctx context.Context, method, u, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
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
		return nil, fmt.Errorf("injector: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("injector: %s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(out, &st)
		return nil, fmt.Errorf("injector: %s %s: %s: %s", method, u, resp.Status, st.Message)
	}
	return out, nil
}
