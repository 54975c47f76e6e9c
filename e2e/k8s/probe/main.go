//go:build e2e_k8s

// Command probe is a pod that tries to reach a service the way an intruder would: it serves
// HTTP on :8080, and GET /tls?addr=IP:PORT dials addr with TLS 1.3, presenting the client
// certificate and key in $PROBE_CERT and $PROBE_KEY (PEM; none when empty), sends a Redis PING
// and answers what happened: "through: <reply>" or "refused: <error>".
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	var certs []tls.Certificate
	if c, k := os.Getenv("PROBE_CERT"), os.Getenv("PROBE_KEY"); c != "" {
		pair, err := tls.X509KeyPair([]byte(c), []byte(k))
		if err != nil {
			log.Fatalf("probe: client certificate: %v", err)
		}
		certs = append(certs, pair)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /tls", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: certs,
			InsecureSkipVerify: true, //nolint:gosec // an intruder does not care who answers; the test checks the server's refusal
		}}
		c, err := d.DialContext(ctx, "tcp", r.URL.Query().Get("addr"))
		if err != nil {
			fmt.Fprintf(w, "refused: %v", err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			fmt.Fprintf(w, "refused: %v", err)
			return
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			fmt.Fprintf(w, "refused: %v", err)
			return
		}
		fmt.Fprintf(w, "through: %q", buf[:n])
	})
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
