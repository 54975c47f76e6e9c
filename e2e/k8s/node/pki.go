//go:build e2e_k8s

package node

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// tokens are the static bearer tokens of the cluster's users (--token-auth-file).
type tokens struct {
	Admin, Node, ControllerManager, Scheduler, Proxy string
}

// ca is the cluster's certificate authority: it signs the API server's and the kubelet's
// serving certificates and the API server's client certificate for the kubelet; pods get it
// as kube-root-ca.crt.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA() (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("node: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "attestmesh-node-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("node: CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("node: CA: %w", err)
	}
	return &ca{cert: cert, key: key}, nil
}

func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return new(big.Int).SetBytes(b)
}

// issue writes base.crt and base.key: a leaf for cn (and orgs), for serving (with the SANs)
// or for client authentication.
func (a *ca) issue(base, cn string, orgs []string, server bool, dnsNames []string, ips []netip.Addr) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("node: key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return fmt.Errorf("node: certificate for %s: %w", cn, err)
	}
	if err := os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return writeECKey(base+".key", key)
}

func writeECKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeCredentials writes the PKI (pki/), the service account key pair, the token file and one
// kubeconfig per user (conf/).
func (c *Cluster) writeCredentials() error {
	authority, err := newCA()
	if err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: authority.cert.Raw})
	if err := os.WriteFile(c.path("pki", "ca.crt"), caPEM, 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	kubernetesIP := c.opts.ServiceCIDR.Addr().Next() // the kubernetes Service's ClusterIP
	loop := netip.MustParseAddr("127.0.0.1")
	if err := authority.issue(c.path("pki", "apiserver"), "kube-apiserver", nil, true,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]netip.Addr{c.nodeIP, kubernetesIP, loop}); err != nil {
		return err
	}
	if err := authority.issue(c.path("pki", "apiserver-kubelet-client"), "kube-apiserver-kubelet-client",
		[]string{"system:masters"}, false, nil, nil); err != nil {
		return err
	}
	if err := authority.issue(c.path("pki", "front-proxy-client"), "front-proxy-client", nil, false, nil, nil); err != nil {
		return err
	}
	if err := authority.issue(c.path("pki", "kubelet"), c.opts.NodeName, nil, true,
		[]string{c.opts.NodeName, "localhost"}, []netip.Addr{c.nodeIP, loop}); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("node: service account key: %w", err)
	}
	if err := writeECKey(c.path("pki", "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := os.WriteFile(c.path("pki", "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}

	c.tokens = tokens{Admin: randomToken(), Node: randomToken(), ControllerManager: randomToken(),
		Scheduler: randomToken(), Proxy: randomToken()}
	// token,user,uid,"group1,group2": the users the bootstrap RBAC policy knows.
	var csv strings.Builder
	fmt.Fprintf(&csv, "%s,admin,admin,\"system:masters\"\n", c.tokens.Admin)
	fmt.Fprintf(&csv, "%s,system:node:%s,node-%s,\"system:nodes\"\n", c.tokens.Node, c.opts.NodeName, c.opts.NodeName)
	fmt.Fprintf(&csv, "%s,system:kube-controller-manager,kube-controller-manager\n", c.tokens.ControllerManager)
	fmt.Fprintf(&csv, "%s,system:kube-scheduler,kube-scheduler\n", c.tokens.Scheduler)
	fmt.Fprintf(&csv, "%s,system:kube-proxy,kube-proxy\n", c.tokens.Proxy)
	if err := os.WriteFile(c.path("pki", "tokens.csv"), []byte(csv.String()), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}

	server := "https://" + netip.AddrPortFrom(c.nodeIP, uint16(c.ports.APIServer)).String() //nolint:gosec // a port from the kernel
	for name, token := range map[string]string{
		"admin": c.tokens.Admin, "kubelet": c.tokens.Node, "kube-controller-manager": c.tokens.ControllerManager,
		"kube-scheduler": c.tokens.Scheduler, "kube-proxy": c.tokens.Proxy,
	} {
		if err := writeKubeconfig(c.path("conf", name+".kubeconfig"), server, c.path("pki", "ca.crt"), name, token); err != nil {
			return err
		}
	}
	c.kubeconfig = c.path("conf", "admin.kubeconfig")
	return c.newClient()
}

func writeKubeconfig(path, server, caFile, user, token string) error {
	b := fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: attestmesh-node
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: attestmesh-node
  context: {cluster: attestmesh-node, user: %s, namespace: default}
current-context: attestmesh-node
`, server, caFile, user, token, user)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
