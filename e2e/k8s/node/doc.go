//go:build e2e_k8s

// Package node runs a real single-node Kubernetes cluster for Go tests, and leaves nothing
// behind: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a private containerd,
// a CNI bridge, the kubelet and kube-proxy (iptables mode), all v1.37.2, built once by
// ../build-k8s.sh into $HOME/.cache/attestmesh/k8s/bin.
//
//	c := node.Start(t, node.Options{})
//	c.ImportImage(t, node.GoImage(t, "github.com/attestmesh/attestmesh/e2e/k8s/node/echo", "localhost/echo:e2e"))
//	client := c.Client()
//
// # Addresses
//
// The harness owns one bridge (amk8s0 unless Options.Bridge says otherwise) with the host at
// the first address of the pod CIDR (10.232.0.1 in 10.232.0.0/24): that address is NodeIP, the
// pods' default gateway, and where kube-apiserver and the kubelet listen. Every other listener
// (etcd, the controller manager, the scheduler, kube-proxy's health and metrics, containerd's
// streaming server) is on 127.0.0.1. Services get ClusterIPs from 10.96.0.0/24; the host routes
// that range to the bridge so that a ClusterIP never leaves the machine, and kube-proxy
// (iptables mode) DNATs it to the pods. The kubernetes Service (10.96.0.1:443) reaches the API
// server from pods; its serving certificate names that address, NodeIP and 127.0.0.1.
//
// Pods reach the host at NodeIP only: tests that serve something to pods listen on
// NodeIP (or on all addresses, reached at NodeIP). Chains ATTESTMESH-NODE-IN and
// ATTESTMESH-NODE-FWD drop whatever a pod sends to another host address or through the host to
// any other network. Pods have no DNS (no cluster DNS runs, and the kubelet gives them an empty
// resolv.conf): use ClusterIPs, pod IPs and the KUBERNETES_SERVICE_HOST environment variable.
//
// # Images
//
// There is no registry: images are tarballs imported into the node's containerd
// (Cluster.ImportImage), and containerd is configured to pull from 127.0.0.1:1, so a missing
// image fails at once and locally. Name images with a tag other than latest (or set
// imagePullPolicy: Never): latest means Always, which tries to pull. GoImage builds a static Go
// main package into a one-binary image; the pause (sandbox) image is built from ./pause by Start.
//
// # Teardown
//
// Start registers a cleanup that deletes every workload and pod through the API and waits for
// containerd's task list to empty; stops the kubelet, kube-proxy, scheduler, controller
// manager, API server and etcd; kills what is left through ctr; stops containerd and its shims
// (found by the private socket path); unmounts what is under the cluster's root; removes the
// cni-* network namespaces, the bridge and its veths, the kubepods and k8s.io cgroups in every
// cgroup v1 hierarchy, the KUBE-*, CNI-* and ATTESTMESH-NODE-* chains (iptables and ip6tables,
// every table) and the nftables tables iptables-nft made for them, kube-proxy's nfacct counters,
// and the files the kubelet and containerd leave in /var and /run whatever their configuration
// (/var/lib/kubelet/device-plugins, /var/lib/cni/results, /var/log/containers,
// /run/containerd/s); and restores the sysctls it recorded before starting. Then it compares
// the host with the snapshot it took before starting and fails the test for anything that is
// left. One cluster runs at a time (flock on /run/attestmesh-k8s-node/lock, a file that stays);
// Start cleans up after a run that crashed, using the state that run left in
// /run/attestmesh-k8s-node/state.json, and logs what it removed. A system containerd may run
// beside it (its live shim sockets are left alone), a real kubelet may not: the kubepods
// cgroups and the KUBE chains would be taken for the harness's.
//
// It needs root, and the Debian packages containerd, runc, containernetworking-plugins,
// iptables, conntrack, nftables, nfacct and iproute2; without them Start skips the test and
// says what is missing. Every file carries the build tag e2e_k8s.
package node
