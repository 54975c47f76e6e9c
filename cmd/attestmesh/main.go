// Command attestmesh is the one binary of the attestmesh confidential service mesh.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
