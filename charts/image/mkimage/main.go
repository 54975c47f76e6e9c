// Command mkimage builds the attestmesh image without Docker (`make image`).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/attestmesh/attestmesh/charts/image"
)

func main() {
	var cfg image.Config
	flag.StringVar(&cfg.Binary, "binary", "bin/attestmesh", "static attestmesh binary")
	flag.StringVar(&cfg.SidecarBinary, "sidecar-binary", "bin/attestmesh-sidecar", "static sidecar build of attestmesh (go build -tags attestmesh_sidecar,grpcnotrace)")
	flag.StringVar(&cfg.Ref, "ref", "ghcr.io/attestmesh/attestmesh:dev", "image reference")
	flag.StringVar(&cfg.Version, "version", "dev", "image version label")
	flag.StringVar(&cfg.Arch, "arch", runtime.GOARCH, "architecture of the binary")
	flag.StringVar(&cfg.OutDir, "out", "target/image", "output directory (oci/ and attestmesh.tar)")
	flag.Parse()
	digest, err := image.Build(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n  OCI layout: %s/oci\n  docker load -i %s/attestmesh.tar\n", cfg.Ref, digest, cfg.OutDir, cfg.OutDir)
}
