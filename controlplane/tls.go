package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/ca"
)

func advertiseHost(cfg Config) string {
	if cfg.AdvertiseHost != "" {
		return cfg.AdvertiseHost
	}
	return "127.0.0.1"
}

// advertiseXDS is the xDS address told to sidecars: --advertise-xds (every replica, for
// fail-over), else the advertised host and the port xDS listens on.
func advertiseXDS(cfg Config, listening string) string {
	if cfg.AdvertiseXDS != "" {
		return cfg.AdvertiseXDS
	}
	return net.JoinHostPort(advertiseHost(cfg), portOf(listening))
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}

// tlsSource holds the control plane's server certificate and renews it before expiry.
type tlsSource struct {
	cert atomicCert
}

func serverCertificate(a *ca.Authority, cfg Config) (*tlsSource, error) {
	s := &tlsSource{}
	if err := s.issue(a, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *tlsSource) issue(a *ca.Authority, cfg Config) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("controlplane: server key: %w", err)
	}
	dns := append([]string{"localhost"}, cfg.ServerNames...)
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h := cfg.AdvertiseHost; h != "" {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	cert, err := a.IssueServerCert(key.Public(), dns, ips, 0)
	if err != nil {
		return fmt.Errorf("controlplane: server certificate: %w", err)
	}
	s.cert.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	return nil
}

func (s *tlsSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }

// renew re-issues the server certificate at two thirds of its lifetime; on failure the last
// good certificate stays and renewal is retried.
func (s *tlsSource) renew(ctx context.Context, a *ca.Authority, cfg Config, log *slog.Logger) error {
	for {
		leaf := s.cert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, time.Minute)):
		}
		if err := s.issue(a, cfg); err != nil {
			log.Error("server certificate renewal failed; keeping the current one", "error", err)
		}
	}
}

// loadCertPool reads a PEM file of CA certificates.
func loadCertPool(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path) //nolint:gosec // a path the operator gives
	if err != nil {
		return nil, err
	}
	certs, err := ca.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return ca.CertPool(certs), nil
}

// mgmtClientAuth is how the management API asks for client certificates: any certificate
// (its key is the identity), or, with --mgmt-client-ca, only those that chain to it.
func mgmtClientAuth(cfg Config, t *tls.Config) error {
	if cfg.MgmtClientCAFile == "" {
		t.ClientAuth = tls.RequestClientCert
		return nil
	}
	pool, err := loadCertPool(cfg.MgmtClientCAFile)
	if err != nil {
		return fmt.Errorf("controlplane: --mgmt-client-ca %s: %w", cfg.MgmtClientCAFile, err)
	}
	t.ClientAuth, t.ClientCAs = tls.VerifyClientCertIfGiven, pool
	return nil
}
