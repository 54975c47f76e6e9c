package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Network is a private bridge with one network namespace per service: every namespace has
// its own loopback (where its app listens) and one address on the bridge (where its sidecar
// listens); the host holds the bridge's first address (where the control plane listens).
// Namespaces reach each other only through the bridge, at the sidecars' addresses.
type Network struct {
	Bridge string
	Prefix netip.Prefix
	Host   netip.Addr
	ns     []string
	links  []string
}

// CanIsolate reports whether this process may create network namespaces (root with
// CAP_NET_ADMIN and the ip tool).
func CanIsolate() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (CAP_NET_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip tool (Debian package iproute2) is not installed")
	}
	return nil
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("local: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewNetwork creates the bridge named bridge with the host at the first address of prefix.
func NewNetwork(ctx context.Context, bridge string, prefix netip.Prefix) (*Network, error) {
	n := &Network{Bridge: bridge, Prefix: prefix.Masked(), Host: prefix.Masked().Addr().Next()}
	_ = ipCmd(ctx, "link", "del", bridge) // a leftover from a killed run
	if err := ipCmd(ctx, "link", "add", bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	n.links = append(n.links, bridge)
	if err := ipCmd(ctx, "addr", "add", fmt.Sprintf("%s/%d", n.Host, prefix.Bits()), "dev", bridge); err != nil {
		n.Close(ctx)
		return nil, err
	}
	if err := ipCmd(ctx, "link", "set", bridge, "up"); err != nil {
		n.Close(ctx)
		return nil, err
	}
	return n, nil
}

// AddNamespace creates namespace name attached to the bridge with address addr, and brings
// up its loopback.
func (n *Network) AddNamespace(ctx context.Context, name string, addr netip.Addr) error {
	_ = ipCmd(ctx, "netns", "del", name)
	if err := ipCmd(ctx, "netns", "add", name); err != nil {
		return err
	}
	n.ns = append(n.ns, name)
	host := "v" + shortName(name)
	_ = ipCmd(ctx, "link", "del", host)
	steps := [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"link", "set", host, "master", n.Bridge},
		{"link", "set", host, "up"},
		{"-n", name, "addr", "add", fmt.Sprintf("%s/%d", addr, n.Prefix.Bits()), "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
		if s[0] == "link" && s[1] == "add" {
			n.links = append(n.links, host)
		}
	}
	return nil
}

// shortName fits an interface name (at most 15 bytes) from a namespace name.
func shortName(name string) string {
	name = strings.NewReplacer("-", "", "_", "").Replace(name)
	if len(name) > 14 {
		name = name[len(name)-14:]
	}
	return name
}

// Close deletes every namespace and link the network created. It is safe to call twice. It
// runs to the end when ctx is already cancelled (the usual case: up was interrupted), using
// only ctx's values.
func (n *Network) Close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for _, ns := range n.ns {
		_ = ipCmd(ctx, "netns", "del", ns)
	}
	for _, l := range n.links {
		_ = ipCmd(ctx, "link", "del", l)
	}
	n.ns, n.links = nil, nil
}

// DialIn connects to addr from inside namespace ns (for probes of an app's loopback).
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("local: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("local: namespace %s: %w", ns, err)}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("local: enter namespace %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
		// Back to the original namespace before the thread serves other goroutines; if that
		// fails the thread stays locked and exits with this goroutine, never to be reused.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.c, r.err
}
