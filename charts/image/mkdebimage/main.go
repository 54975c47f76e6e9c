// Command mkdebimage builds a container image from Debian's packages without Docker (`make
// example-images`): mmdebstrap makes the root file system (cached), go-containerregistry writes
// the image as a tarball.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/attestmesh/attestmesh/charts/image"
)

func main() {
	var cfg image.DebianConfig
	var pkgs string
	home, _ := os.UserHomeDir()
	flag.StringVar(&cfg.Ref, "ref", "", "image reference with a tag, e.g. localhost/flaskredis/redis:1")
	flag.StringVar(&pkgs, "packages", "", "Debian packages to install, comma-separated")
	flag.StringVar(&cfg.Suite, "suite", "bookworm", "Debian release")
	flag.StringVar(&cfg.CacheDir, "cache", filepath.Join(home, ".cache", "attestmesh", "images"), "where root file systems are cached")
	flag.StringVar(&cfg.Out, "out", "", "image tarball to write")
	flag.Parse()
	cfg.Packages = strings.Split(pkgs, ",")
	cfg.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	digest, err := image.BuildDebian(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdebimage:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n  %s (docker load -i, ctr images import, crane push)\n", cfg.Ref, digest, cfg.Out)
}
