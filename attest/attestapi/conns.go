package attestapi

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
)

// conns is a Client's connection to the control plane, dialled again after an attempt timed
// out on it.
//
// A replica that stopped answering (a frozen process, a deadlocked handler, a network path
// that drops everything) leaves behind a connection that looks ready: every call on it waits
// for its deadline, and pick_first stays with it. So an attempt that timed out retires the
// connection it used, and the next attempt dials again: with a comma-separated list of
// replicas, those whose attempts timed out come last in the order that pick_first tries (the
// others shuffled, as in Target); a DNS name is shuffled again. A replica that accepts TCP but
// never completes a TLS handshake does not hold a new connection: pick_first starts on the
// next address after 250 ms (gRPC's Happy Eyeballs). A retired connection is closed once the
// last attempt using it returns; each attempt has its own deadline.
type conns struct {
	list  []string // the replicas of a comma-separated address; nil for one address or dns:///
	dialf func(order []string) (*grpc.ClientConn, error)

	mu       sync.Mutex
	cur      *conn
	retired  map[*conn]struct{}   // retired connections that attempts still use
	suspects map[string]time.Time // replicas of list on which an attempt timed out, and when
	closed   bool
}

type conn struct {
	cc  *grpc.ClientConn
	api attestationpb.AttestationClient

	users   int  // attempts using it; guarded by conns.mu
	retired bool // guarded by conns.mu
	done    bool // closed; guarded by conns.mu
}

var errClosed = errors.New("attestapi: client is closed")

// shuffle puts the replicas that are not suspected in random order, so that clients spread
// over them. A variable for the tests, which need one order.
var shuffle = func(s []string) {
	rand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] }) //nolint:gosec // G404: spreading load needs no cryptographic randomness
}

func newConns(list []string, dialf func(order []string) (*grpc.ClientConn, error)) (*conns, error) {
	c := &conns{list: list, dialf: dialf, retired: map[*conn]struct{}{}, suspects: map[string]time.Time{}}
	cn, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.cur = cn
	return c, nil
}

// dial makes a connection; c.mu is held, or c is not shared yet.
func (c *conns) dial() (*conn, error) {
	var order []string
	if c.list != nil {
		var ok, suspect []string
		for _, a := range c.list {
			if _, s := c.suspects[a]; s {
				suspect = append(suspect, a)
			} else {
				ok = append(ok, a)
			}
		}
		shuffle(ok)
		// The replica suspected longest ago first: the likeliest to be back.
		slices.SortStableFunc(suspect, func(a, b string) int { return c.suspects[a].Compare(c.suspects[b]) })
		order = append(ok, suspect...)
	}
	cc, err := c.dialf(order)
	if err != nil {
		return nil, err
	}
	return &conn{cc: cc, api: attestationpb.NewAttestationClient(cc)}, nil
}

// get returns the current connection for one attempt, which must put it back.
func (c *conns) get() (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if c.cur == nil { // the last dial failed
		cn, err := c.dial()
		if err != nil {
			return nil, err
		}
		c.cur = cn
	}
	c.cur.users++
	return c.cur, nil
}

// put ends an attempt's use of cn.
func (c *conns) put(cn *conn) {
	c.mu.Lock()
	cn.users--
	closeIt := cn.retired && cn.users == 0 && !cn.done
	if closeIt {
		cn.done = true
		delete(c.retired, cn)
	}
	c.mu.Unlock()
	if closeIt {
		_ = cn.cc.Close()
	}
}

// timedOut retires cn, on which an attempt timed out, if it is still the current connection:
// the next attempt dials again. replica is the address the attempt reached, "" when it
// reached none (no connection completed in time).
func (c *conns) timedOut(ctx context.Context, cn *conn, replica string) {
	name := c.match(ctx, replica)
	c.mu.Lock()
	defer c.mu.Unlock()
	if name != "" {
		c.suspects[name] = time.Now()
	}
	if cn != c.cur || c.closed {
		return // another attempt retired it already
	}
	cn.retired = true
	c.retired[cn] = struct{}{} // closed by the last put
	c.cur = nil
	if next, err := c.dial(); err == nil {
		c.cur = next
	}
}

// answered clears a replica that answered an attempt of suspicion.
func (c *conns) answered(ctx context.Context, replica string) {
	c.mu.Lock()
	none := len(c.suspects) == 0
	c.mu.Unlock()
	if none {
		return // the common case: no name to look up
	}
	name := c.match(ctx, replica)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.suspects, name)
}

// matchTimeout bounds the name lookups of match.
const matchTimeout = time.Second

// match returns the replica of the list that peer (ip:port, as the connection saw it) is: the
// one whose address it is, or whose host name resolves to its IP. "" when none is (or a proxy
// stood between).
func (c *conns) match(ctx context.Context, peer string) string {
	if c.list == nil || peer == "" {
		return ""
	}
	if slices.Contains(c.list, peer) {
		return peer
	}
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, matchTimeout)
	defer cancel()
	for _, a := range c.list {
		host, port, err := net.SplitHostPort(a)
		if err != nil || port != strconv.Itoa(int(ap.Port())) {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Unmap() == ap.Addr().Unmap() {
				return a
			}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			continue
		}
		for _, ip := range ips {
			if ip.Unmap() == ap.Addr().Unmap() {
				return a
			}
		}
	}
	return ""
}

// close closes every connection now: attempts in flight end with Canceled.
func (c *conns) close() error {
	c.mu.Lock()
	c.closed = true
	all := make([]*conn, 0, 1+len(c.retired))
	if c.cur != nil {
		all = append(all, c.cur)
		c.cur = nil
	}
	for cn := range c.retired {
		all = append(all, cn)
	}
	clear(c.retired)
	var ccs []*grpc.ClientConn
	for _, cn := range all {
		if !cn.done {
			cn.retired, cn.done = true, true
			ccs = append(ccs, cn.cc)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, cc := range ccs {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
