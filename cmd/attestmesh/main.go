// Command attestmesh is the one binary of the attestmesh confidential service mesh.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
	"github.com/attestmesh/attestmesh/proxy/launch"
)

func main() {
	// The launcher re-executes this binary as its stage 2 in a private mount namespace.
	launch.MaybeStage2(launch.DecryptFSPF)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
