package proxytest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Echo is a TCP echo server on loopback. StartTLSEcho's variant terminates
// mutual TLS and records the serial of every client certificate it sees.
type Echo struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	serials []string
}

// StartEcho starts an echo server on 127.0.0.1:0.
func StartEcho() (*Echo, error) {
	e, err := startEcho()
	if err != nil {
		return nil, err
	}
	e.wg.Add(1)
	go e.serve()
	return e, nil
}

// StartTLSEcho starts an echo server on 127.0.0.1:0 that presents cert,
// requires a client certificate (any) and records its serial.
func StartTLSEcho(cert tls.Certificate) (*Echo, error) {
	e, err := startEcho()
	if err != nil {
		return nil, err
	}
	e.ln = tls.NewListener(e.ln, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.serials = append(e.serials, cs.PeerCertificates[0].SerialNumber.Text(16))
			return nil
		},
	})
	e.wg.Add(1)
	go e.serve()
	return e, nil
}

// Serials returns the client certificate serials seen, in order.
func (e *Echo) Serials() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.serials...)
}

func startEcho() (*Echo, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxytest: echo listen: %w", err)
	}
	return &Echo{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}, nil
}

func (e *Echo) serve() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			_, _ = io.Copy(c, c)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			e.mu.Lock()
			delete(e.conns, c)
			e.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// Close stops the server and closes open connections.
func (e *Echo) Close() {
	_ = e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		_ = c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for configuration that must name a port before it is bound. Ports
// come from 20000-31999, below Linux's ephemeral range, so that outgoing
// connections and port-0 listeners do not take them meanwhile.
func FreeAddr() (string, error) {
	var lc net.ListenConfig
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000))) //nolint:gosec // G404: test port choice
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			continue
		}
		_ = ln.Close()
		return addr, nil
	}
	return "", errors.New("proxytest: no free port found")
}
