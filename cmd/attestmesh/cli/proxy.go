package cli

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/proxy"
)

func newProxyCmd() *cobra.Command {
	var wf workloadFlags
	var cfg proxy.Config
	var bootstrap bool
	var concurrency int
	var multiplex bool
	var inboundIP string
	cmd := &cobra.Command{
		Use:   "proxy --config-id SESSION/SERVICE",
		Short: "Run the sidecar: attest, get an SVID, follow ADS, serve the mTLS tunnels",
		Long: `proxy is the sidecar of one service. It generates its key in memory and attests to the
control plane as the service's sidecar: its quote shows its measurement (that of this attestmesh
binary in simulation), and it presents the grant that the service's app, attested by
'attestmesh launch' in the same pod or network namespace, hands it (it waits for the app until
then). With the X.509-SVID it receives it opens ADS over mTLS to the control plane. It then serves
exactly the listeners, clusters and secrets it is sent: inbound listeners that accept only the
SPIFFE IDs allowed to reach the service and hand connections to the app's loopback, and
outbound listeners on the app's loopback that carry connections over mTLS to the server's
sidecar. It re-attests before its SVID expires, showing the SVID it holds; established
connections are never dropped.

The admin endpoint (--admin-addr) serves /ready, /config_dump and /metrics; with --pprof also
Go's profiles under /debug/pprof/ (go tool pprof http://ADDR/debug/pprof/profile?seconds=10),
answered only to clients in the sidecar's own network namespace.

--envoy-bootstrap prints instead a bootstrap for a real Envoy using the same control plane
(see docs/envoy.md).`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			cfg.ConfigID = wf.configID
			cfg.NoMultiplex = !multiplex
			if inboundIP != "" {
				ip, err := netip.ParseAddr(inboundIP)
				if err != nil {
					return fmt.Errorf("proxy: --inbound-ip %q: want an IP address (the pod's, from status.podIP): %w", inboundIP, err)
				}
				cfg.InboundIP = ip
			}
			if bootstrap {
				out, err := proxy.EnvoyBootstrap(cfg)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(append(out, '\n'))
				return err
			}
			cfg.Logger = newLogger(wf.logLevel).With("config_id", wf.configID)
			n, why := proxy.SetConcurrency(concurrency)
			cfg.Logger.Info("sidecar starting", "concurrency", n, "concurrency_from", why)
			client, err := wf.dial(cfg.Logger)
			if err != nil {
				return err
			}
			defer client.Close()
			a, err := proxy.AttestationAttestor(client, wf.configID, nil, cfg.Logger)
			if err != nil {
				return err
			}
			cfg.Attestor = a
			return proxy.Run(ctx, cfg)
		}),
	}
	wf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&cfg.TrustDomain, "trust-domain", "attestmesh.local", "SPIFFE trust domain")
	f.StringVar(&cfg.XDSAddr, "xds-addr", "", "the control plane's xDS address (default: the one attestation returns)")
	f.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint: /ready, /config_dump, /metrics")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiles under /debug/pprof/ on the admin endpoint, only to clients in the sidecar's network namespace")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long open connections may drain on SIGTERM")
	f.BoolVar(&multiplex, "multiplex", true, "carry app connections to and from other attestmesh sidecars as streams over shared mTLS connections (negotiated by ALPN "+proxy.MuxProto+"; other peers get one mTLS connection per app connection)")
	f.IntVar(&concurrency, "concurrency", 0, "threads that run the sidecar at once (GOMAXPROCS); 0: Go's default, or 1 under a CPU limit of one CPU or less")
	f.BoolVar(&bootstrap, "envoy-bootstrap", false, "print a bootstrap for a real Envoy and exit")
	f.StringVar(&inboundIP, "inbound-ip", "", "bind inbound listeners sent on the wildcard address to this IP (the pod's IP; the injector sets it)")
	return cmd
}
