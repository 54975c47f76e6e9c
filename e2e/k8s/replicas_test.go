//go:build e2e_k8s

package k8s_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/attestmesh/attestmesh/e2e/k8s/node"
)

// TestReplicasChart installs the control-plane chart with three replicas on the bundled
// three-member etcd into a real API server: every object is accepted (StatefulSets, PodDisruptionBudgets,
// NetworkPolicies, the etcd certificates), an upgrade keeps the certificates the first install
// generated (the chart looks them up in the API server), and uninstall removes everything.
// It runs on the real node (package node), but its pods do not start: their images (the
// attestmesh and etcd images it names by default) are not imported, and the node pulls from no
// registry. The control plane's replicas on real etcd members are tested in controlplane
// (TestReplicasOnEtcd) and e2e (the chaos test).
func TestReplicasChart(t *testing.T) {
	c := node.Start(t, node.Options{})
	client := c.Client()
	const ns = "attestmesh-ha"
	chartDir := filepath.Join("..", "..", "charts", "attestmesh")
	values := map[string]any{
		"replicas": 3,
		"store": map[string]any{
			"etcd": map[string]any{"bundled": map[string]any{"enabled": true}},
			"key":  map[string]any{"keepOnUninstall": false}, "anchor": map[string]any{"keepOnUninstall": false},
		},
	}
	rel := helmInstall(t.Context(), t, c, ns, "attestmesh", chartDir, values)
	objects := requireAllExist(t, c, rel)
	for _, want := range []string{"StatefulSet/attestmesh", "StatefulSet/attestmesh-etcd", "Service/attestmesh-etcd",
		"PodDisruptionBudget/attestmesh", "PodDisruptionBudget/attestmesh-etcd", "Secret/attestmesh-etcd-tls", "NetworkPolicy/attestmesh-etcd"} {
		assert.Contains(t, objects, want)
	}

	ctx := t.Context()
	cp, err := client.AppsV1().StatefulSets(ns).Get(ctx, "attestmesh", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(3), *cp.Spec.Replicas)
	assert.Contains(t, cp.Spec.Template.Spec.Containers[0].Args, "--store=etcd://attestmesh-etcd-0.attestmesh-etcd.attestmesh-ha.svc:2379,"+
		"attestmesh-etcd-1.attestmesh-etcd.attestmesh-ha.svc:2379,attestmesh-etcd-2.attestmesh-etcd.attestmesh-ha.svc:2379")
	etcd, err := client.AppsV1().StatefulSets(ns).Get(ctx, "attestmesh-etcd", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(3), *etcd.Spec.Replicas)
	for _, name := range []string{"attestmesh", "attestmesh-etcd"} {
		pdb, err := client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, pdb.Spec.MaxUnavailable.IntValue(), name)
	}
	before, err := client.CoreV1().Secrets(ns).Get(ctx, "attestmesh-etcd-tls", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, before.Data["ca.crt"])

	// An upgrade renders the chart again: the certificates must be the same, or running
	// members and replicas would no longer trust each other.
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	up := action.NewUpgrade(helmConfig(t, c, ns))
	up.Namespace, up.Timeout = ns, 2*time.Minute
	rel2, err := up.RunWithContext(ctx, "attestmesh", ch, values)
	require.NoError(t, err)
	require.Equal(t, release.StatusDeployed, rel2.Info.Status)
	after, err := client.CoreV1().Secrets(ns).Get(ctx, "attestmesh-etcd-tls", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, before.Data, after.Data, "helm upgrade kept the etcd certificates")

	helmUninstall(t, c, ns, "attestmesh", rel2)
}
