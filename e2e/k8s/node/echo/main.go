//go:build e2e_k8s

// Command echo is a tiny HTTP server for tests on the e2e/k8s/node harness (build it static
// with node.GoImage). It listens on :8080 (or $PORT) in its pod and serves
//
//	GET /         {"hostname": ..., "podIP": $POD_IP, "remote": ...} as JSON
//	GET /healthz  ok
//	GET /get?url=http://ADDR/PATH  fetches a plain-HTTP URL from inside the pod and returns
//	              its status and body (to check what the pod can reach)
//	GET /kube     GET /version from the API server through the kubernetes Service
//	              ($KUBERNETES_SERVICE_HOST), with the pod's ServiceAccount token and CA
//
// and stops on SIGTERM (as PID 1 of a container it must: the default action does not apply).
package main

import (
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
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Stderr))
}

func run(ctx context.Context, stderr io.Writer) int {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: routes(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, "echo:", err)
		return 1
	case <-ctx.Done():
	}
	// ctx is done: drain for up to 5 s from a context that keeps its values, not its end.
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		fmt.Fprintln(stderr, "echo:", err)
		return 1
	}
	return 0
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"hostname": host, "podIP": os.Getenv("POD_IP"), "remote": r.RemoteAddr})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("url")
		if !strings.HasPrefix(target, "http://") {
			http.Error(w, "want ?url=http://...", http.StatusBadRequest)
			return
		}
		relay(w, r.Context(), &http.Client{Timeout: 5 * time.Second}, target, "")
	})
	mux.HandleFunc("GET /kube", func(w http.ResponseWriter, r *http.Request) {
		client, token, err := inCluster()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
		relay(w, r.Context(), client, "https://"+host+"/version", token)
	})
	return mux
}

// relay GETs target and writes "STATUS\nBODY", or 502 with the error.
func relay(w http.ResponseWriter, ctx context.Context, client *http.Client, target, token string) {
	// A test server: it fetches what its test asks for, from inside the pod.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil) //nolint:gosec // see above
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req) //nolint:gosec // see above
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	fmt.Fprintf(w, "%d\n%s", resp.StatusCode, body) //nolint:gosec // plain text, not HTML
}

// inCluster is the client a pod uses for the API server: the ServiceAccount's CA and token.
func inCluster() (*http.Client, string, error) {
	const dir = "/var/run/secrets/kubernetes.io/serviceaccount/"
	caPEM, err := os.ReadFile(dir + "ca.crt")
	if err != nil {
		return nil, "", fmt.Errorf("echo: %w", err)
	}
	token, err := os.ReadFile(dir + "token")
	if err != nil {
		return nil, "", fmt.Errorf("echo: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, "", errors.New("echo: no certificate in ca.crt")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, strings.TrimSpace(string(token)), nil
}
