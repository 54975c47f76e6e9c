#!/usr/bin/env bash
# Builds a real kube-apiserver (k8s.io/kubernetes v1.37.2) and an embedded etcd (v3.7.3) from
# the Go module proxy, in throwaway modules OUTSIDE this repository, into $OUT (default
# $HOME/.cache/attestmesh/k8s/bin). Skips what is already built. The first kube-apiserver build
# takes about 5 minutes on 2 cores; the Go build cache makes later ones fast.
set -euo pipefail
K8S_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.3
ROOT=${ATTESTMESH_K8S_CACHE:-$HOME/.cache/attestmesh/k8s}
OUT=${OUT:-$ROOT/bin}
mkdir -p "$OUT" "$ROOT/src/apiserver" "$ROOT/src/etcd"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

if [ ! -x "$OUT/etcd" ]; then
  cd "$ROOT/src/etcd"
  cat > go.mod <<EOM
module attestmesh.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOM
  cat > main.go <<'EOM'
// Command etcd runs an embedded etcd on the given loopback URLs until SIGTERM.
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dir := flag.String("data-dir", "", "data directory")
	client := flag.String("listen-client-url", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("listen-peer-url", "http://127.0.0.1:2380", "peer URL")
	flag.Parse()
	cfg := embed.NewConfig()
	cfg.Dir = *dir
	cu, err := url.Parse(*client)
	if err != nil {
		log.Fatal(err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		log.Fatal(err)
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	log.Print("etcd ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Fatal(err)
	}
}
EOM
  go mod tidy
  go build -trimpath -o "$OUT/etcd" .
fi

if [ ! -x "$OUT/kube-apiserver" ]; then
  cd "$ROOT/src/apiserver"
  {
    printf 'module attestmesh.local/k8sbuild\n\ngo 1.26.0\n\ntool k8s.io/kubernetes/cmd/kube-apiserver\n\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION"
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
      printf 'replace k8s.io/%s => k8s.io/%s %s\n' "$m" "$m" "$STAGING_VERSION"
    done
  } > go.mod
  go mod tidy
  # The version that `make` would stamp in (discovery reports it; Helm checks kubeVersion).
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  go build -trimpath -ldflags "-X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
    -o "$OUT/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
fi
echo "kube-apiserver and etcd in $OUT"
