package controlplane

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// fileCert serves a certificate and key from files (a cert-manager or user-supplied Kubernetes
// TLS Secret) and reloads them when they change: Kubernetes updates a mounted Secret in place.
// A reload that fails keeps the last good certificate. Safe for concurrent use.
type fileCert struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func newFileCert(certFile, keyFile string) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileCert) load() error {
	st, err := os.Stat(f.certFile)
	if err != nil {
		return fmt.Errorf("controlplane: webhook certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("controlplane: webhook certificate %s: %w", f.certFile, err)
	}
	f.cert, f.modTime = &c, st.ModTime()
	return nil
}

// get implements tls.Config.GetCertificate, looking for a newer file at most every 10 s.
func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) > 10*time.Second {
		f.checked = time.Now()
		if st, err := os.Stat(f.certFile); err == nil && !st.ModTime().Equal(f.modTime) {
			_ = f.load() // on failure the last good certificate stays
		}
	}
	return f.cert, nil
}
