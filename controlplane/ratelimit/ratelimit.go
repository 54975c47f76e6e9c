// Package ratelimit bounds how fast each caller may use a control-plane API: one token bucket
// per key (a client identity, or the address of an anonymous caller), with a bounded number of
// keys, so that neither one caller's flood nor a flood of callers can take the API from the
// others or grow the control plane's memory.
package ratelimit

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a Limiter.
type Config struct {
	// Rate is the sustained requests per second allowed per key.
	Rate float64
	// Burst is how many requests one key may make at once.
	Burst int
	// MaxKeys bounds the keys tracked; the least recently seen key is forgotten first (it
	// then starts again with a full bucket). Zero means DefaultMaxKeys.
	MaxKeys int
}

// DefaultMaxKeys is the default number of keys a Limiter tracks.
const DefaultMaxKeys = 16384

// Limiter is a set of token buckets by key. Safe for concurrent use.
type Limiter struct {
	cfg Config
	now func() time.Time

	mu    sync.Mutex
	keys  map[string]*list.Element
	order *list.List // front: most recently seen
}

type entry struct {
	key string
	lim *rate.Limiter
}

// New returns a Limiter; a zero or negative Rate allows everything.
func New(cfg Config) *Limiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 1
	}
	return &Limiter{cfg: cfg, now: time.Now, keys: map[string]*list.Element{}, order: list.New()}
}

// Allow reports whether key may make one request now, and takes a token if so.
func (l *Limiter) Allow(key string) bool {
	if l == nil || l.cfg.Rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var lim *rate.Limiter
	if el, ok := l.keys[key]; ok {
		l.order.MoveToFront(el)
		lim = el.Value.(*entry).lim //nolint:forcetypeassert // the list holds *entry only
	} else {
		if l.order.Len() >= l.cfg.MaxKeys {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.keys, oldest.Value.(*entry).key) //nolint:forcetypeassert // the list holds *entry only
		}
		lim = rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)
		l.keys[key] = l.order.PushFront(&entry{key: key, lim: lim})
	}
	return lim.AllowN(l.now(), 1)
}

// Keys returns the number of keys tracked (for tests and metrics).
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

// PrefixFactor is how many callers' worth of requests the addresses of one network prefix share
// (see SourcePrefix): an API that limits each address also limits each prefix, at PrefixFactor
// times the rate and burst, so that one host with many addresses gains no more than that.
const PrefixFactor = 4

// SourcePrefix is the network prefix that a source address belongs to, the key of the
// per-prefix limit: its /24 for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6. Whoever holds
// one address usually holds its whole prefix. An address that does not parse is its own key.
func SourcePrefix(host string) string {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	bits := 64
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.WithZone("").Prefix(bits)
	if err != nil {
		return host
	}
	return p.String()
}

// Pair limits each source address and, at PrefixFactor times the rate and burst, each source
// prefix (SourcePrefix). Safe for concurrent use.
type Pair struct {
	cfg    Config
	addr   *Limiter
	prefix *Limiter
}

// NewPair returns a Pair whose per-address limit is cfg.
func NewPair(cfg Config) *Pair {
	pcfg := cfg
	pcfg.Rate *= PrefixFactor
	pcfg.Burst *= PrefixFactor
	return &Pair{cfg: cfg, addr: New(cfg), prefix: New(pcfg)}
}

// Allow reports whether a request from host (an address, no port) may proceed: both its
// address and its prefix must have a token. A request refused by the address limit does not
// spend the prefix's token.
func (p *Pair) Allow(host string) bool {
	return p.addr.Allow(host) && p.prefix.Allow(SourcePrefix(host))
}
