package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEtcdPrefix is the key prefix under which the control plane keeps its records in etcd.
const DefaultEtcdPrefix = "/attestmesh/"

// EtcdConfig configures an Etcd engine.
type EtcdConfig struct {
	// Endpoints are the etcd members' client URLs or host:port pairs.
	Endpoints []string
	// TLS authenticates the control plane to etcd (client certificate) and etcd to it (its CA).
	// Nil means plaintext, which ParseEtcdURL allows for loopback endpoints only.
	TLS *tls.Config
	// Prefix is prepended to every key (DefaultEtcdPrefix when empty), so that one etcd can
	// hold several installations, or the cluster's own data beside.
	Prefix string
	// DialTimeout bounds the first connection (10 s when zero).
	DialTimeout time.Duration
	// RequestTimeout bounds each request that has no deadline of its own (10 s when zero).
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// ParseEtcdURL reads the value of --store: "etcd://host:port[,host:port...]". It refuses
// non-loopback endpoints without tlsConfig: the records are sealed, but etcd's own
// authentication and the integrity of every transaction ride on TLS.
func ParseEtcdURL(raw string, tlsConfig *tls.Config) (EtcdConfig, error) {
	rest, ok := strings.CutPrefix(raw, "etcd://")
	if !ok || rest == "" {
		return EtcdConfig{}, fmt.Errorf("store: %q: want etcd://host:port[,host:port...]", raw)
	}
	cfg := EtcdConfig{TLS: tlsConfig}
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
	}
	for ep := range strings.SplitSeq(rest, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil || host == "" || port == "" {
			return EtcdConfig{}, fmt.Errorf("store: %q: endpoint %q is not host:port", raw, ep)
		}
		if tlsConfig == nil && !isLoopback(host) {
			return EtcdConfig{}, fmt.Errorf("store: %q: endpoint %q is not on loopback: give etcd client certificates "+
				"(--etcd-ca, --etcd-cert, --etcd-key)", raw, ep)
		}
		cfg.Endpoints = append(cfg.Endpoints, scheme+ep)
	}
	return cfg, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Etcd is an Engine on an etcd cluster, for several control-plane replicas: Apply is one etcd
// transaction (every condition compared, then every write, atomically), so two replicas can
// never both win a compare-and-swap; reads are linearizable; Watch reports every change made
// by any replica. A write is durable when a quorum of members has it.
//
// Safe for concurrent use.
type Etcd struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration
	log     *slog.Logger
}

var _ Engine = (*Etcd)(nil)

// OpenEtcd connects to etcd and checks that it answers.
func OpenEtcd(ctx context.Context, cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("store: etcd: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, TLS: cfg.TLS, DialTimeout: cfg.DialTimeout, Context: context.WithoutCancel(ctx),
		Logger:               zap.NewNop(),
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// Fail over to another member as soon as one stops answering.
		AutoSyncInterval: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("store: etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	e := &Etcd{cli: cli, prefix: cfg.Prefix, timeout: cfg.RequestTimeout, log: log}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, e.prefix, clientv3.WithCountOnly()); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("store: etcd %s does not answer: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return e, nil
}

func (e *Etcd) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.timeout)
}

func (e *Etcd) wrap(op, key string, err error) error {
	return fmt.Errorf("store: etcd %s %q: %w", op, key, err)
}

// Get implements Engine.
func (e *Etcd) Get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.prefix+key)
	if err != nil {
		return nil, e.wrap("get", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return resp.Kvs[0].Value, nil
}

// List implements Engine.
func (e *Etcd) List(ctx context.Context, prefix string) ([]KV, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.prefix+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, e.wrap("list", prefix, err)
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, KV{Key: string(kv.Key[len(e.prefix):]), Value: kv.Value})
	}
	return out, nil
}

// Apply implements Engine as one etcd transaction. A condition on a value also requires the
// key to exist (etcd compares a missing key's value as empty).
func (e *Etcd) Apply(ctx context.Context, conds []Cond, writes []Write) error {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	cmps := make([]clientv3.Cmp, 0, 2*len(conds))
	for _, c := range conds {
		k := e.prefix + c.Key
		if c.Value == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), ">", 0), clientv3.Compare(clientv3.Value(k), "=", string(c.Value)))
	}
	ops := make([]clientv3.Op, 0, len(writes))
	for _, w := range writes {
		if w.Key == "" {
			return errors.New("store: etcd: empty key")
		}
		k := e.prefix + w.Key
		if w.Value == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.Value)))
		}
	}
	resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return e.wrap("transaction on", firstKey(conds, writes), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: a condition on %q no longer holds", ErrConflict, firstKey(conds, writes))
	}
	return nil
}

func firstKey(conds []Cond, writes []Write) string {
	switch {
	case len(writes) > 0:
		return writes[0].Key
	case len(conds) > 0:
		return conds[0].Key
	}
	return ""
}

// Watch calls onChange with the keys of every batch of changes that any writer makes, until
// ctx is done. When the watch breaks (a member lost, a compaction) it starts again and reports
// a change with no keys: the caller reads everything again.
func (e *Etcd) Watch(ctx context.Context, onChange func(keys []string)) error {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range e.cli.Watch(wctx, e.prefix, clientv3.WithPrefix()) {
			if err := resp.Err(); err != nil {
				e.log.WarnContext(ctx, "store: etcd watch interrupted; watching again", "error", err.Error())
				break
			}
			keys := make([]string, 0, len(resp.Events))
			for _, ev := range resp.Events {
				keys = append(keys, string(ev.Kv.Key[len(e.prefix):]))
			}
			onChange(keys)
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		onChange(nil)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// Endpoints returns the members' client URLs, for messages.
func (e *Etcd) Endpoints() string {
	var hosts []string
	for _, ep := range e.cli.Endpoints() {
		if u, err := url.Parse(ep); err == nil {
			hosts = append(hosts, u.Host)
		}
	}
	return strings.Join(hosts, ",")
}

// Close implements Engine.
func (e *Etcd) Close() error { return e.cli.Close() }
