package charts_test

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/attestmesh/attestmesh/attest/fspf"
	"github.com/attestmesh/attestmesh/charts"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
)

var kubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

// requireLintClean fails on any lint message above INFO.
func requireLintClean(t *testing.T, dir string, values map[string]any) {
	t.Helper()
	l := lint.AllWithKubeVersion(dir, values, "attestmesh-system", kubeVersion)
	for _, m := range l.Messages {
		assert.LessOrEqual(t, m.Severity, support.InfoSev, m.Error())
	}
}

// object is a rendered manifest with its kind and name.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	raw string
}

// render renders the chart in dir and returns its objects, sorted by kind and name.
func render(t *testing.T, dir string, values map[string]any) []object {
	t.Helper()
	ch, err := loader.Load(dir)
	require.NoError(t, err)
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kubeVersion
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{
		Name: "rel", Namespace: "attestmesh-system", IsInstall: true, Revision: 1,
	}, caps)
	require.NoError(t, err)
	files, err := engine.Render(ch, vals)
	require.NoError(t, err)
	var out []object
	for name, content := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for doc := range strings.SplitSeq(content, "\n---") {
			if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
				continue
			}
			var o object
			require.NoError(t, yaml.Unmarshal([]byte(doc), &o), name)
			if o.Kind == "" {
				continue // only comments
			}
			o.raw = doc
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b object) int {
		return strings.Compare(a.Kind+"/"+a.Metadata.Name, b.Kind+"/"+b.Metadata.Name)
	})
	return out
}

func kinds(objs []object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Kind+"/"+o.Metadata.Name)
	}
	return out
}

// decode decodes o strictly into a typed object, so a misspelt field fails.
func decode[T any](t *testing.T, o object) *T {
	t.Helper()
	var v T
	require.NoError(t, yaml.UnmarshalStrict([]byte(o.raw), &v), o.Kind+"/"+o.Metadata.Name)
	return &v
}

func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	require.Failf(t, "object not rendered", "%s/%s not in %v", kind, name, kinds(objs))
	return object{}
}

func TestControlPlaneChart(t *testing.T) {
	const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	tests := []struct {
		name   string
		values map[string]any
		want   []string
		check  func(t *testing.T, objs []object)
	}{
		{
			name:   "defaults: simulation, control plane patches the caBundle",
			values: nil,
			want: []string{
				"ClusterRole/attestmesh-system-rel-attestmesh-endpoints", "ClusterRole/attestmesh-system-rel-attestmesh-injector",
				"ClusterRoleBinding/attestmesh-system-rel-attestmesh-endpoints", "ClusterRoleBinding/attestmesh-system-rel-attestmesh-injector",
				"ConfigMap/rel-attestmesh-dashboard", "MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector",
				"NetworkPolicy/rel-attestmesh-las",
				"Role/rel-attestmesh-store-anchor", "RoleBinding/rel-attestmesh-store-anchor", "Secret/rel-attestmesh-store-generation",
				"Secret/rel-attestmesh-store-key", "Service/rel-attestmesh", "Service/rel-attestmesh-headless",
				"ServiceAccount/rel-attestmesh", "StatefulSet/rel-attestmesh",
				"ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				c := ss.Spec.Template.Spec.Containers[0]
				assert.Equal(t, "ghcr.io/attestmesh/attestmesh:0.1.0", c.Image)
				for _, a := range c.Args {
					assert.NotContains(t, a, "recovery", "no recovery keys by default")
				}
				for _, a := range []string{"--simulation", "--store-key-file=/etc/attestmesh/store-key/store-key",
					"--store-anchor=kubernetes-secret:attestmesh-system/rel-attestmesh-store-generation",
					"--webhook-addr=:9443", "--webhook-config-name=attestmesh-system-rel-attestmesh-injector",
					"--injector-attest-addr=rel-attestmesh.attestmesh-system.svc:18765",
					"--injector-las-addr=rel-attestmesh.attestmesh-system.svc:18766"} {
					assert.Contains(t, c.Args, a)
				}
				require.Len(t, ss.Spec.VolumeClaimTemplates, 1)
				assert.Equal(t, "1Gi", ss.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String())
				assert.True(t, *ss.Spec.Template.Spec.AutomountServiceAccountToken, "it patches the webhook")

				svc := decode[corev1.Service](t, find(t, objs, "Service", "rel-attestmesh"))
				ports := map[string]int32{}
				for _, p := range svc.Spec.Ports {
					ports[p.Name] = p.Port
				}
				assert.Equal(t, map[string]int32{"https-mgmt": 8081, "grpc-attest": 18765, "grpc-xds": 18000,
					"http-metrics": 9102, "https-webhook": 9443, "tcp-las": 18766}, ports)

				role := decode[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "attestmesh-system-rel-attestmesh-injector"))
				assert.Equal(t, []rbacv1.PolicyRule{{
					APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
					ResourceNames: []string{"attestmesh-system-rel-attestmesh-injector"}, Verbs: []string{"get", "patch"},
				}}, role.Rules, "least privilege: one object, two verbs")
				assert.Contains(t, c.Args, "--kubernetes")
				follow := decode[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "attestmesh-system-rel-attestmesh-endpoints"))
				assert.Equal(t, []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
					{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
				}, follow.Rules, "least privilege: read pods and EndpointSlices, nothing else")

				mwc := decode[admissionregv1.MutatingWebhookConfiguration](t, find(t, objs, "MutatingWebhookConfiguration", "attestmesh-system-rel-attestmesh-injector"))
				w := mwc.Webhooks[0]
				assert.Equal(t, admissionregv1.Fail, *w.FailurePolicy)
				assert.Nil(t, w.ClientConfig.CABundle)
				require.NotNil(t, w.ClientConfig.Service)
				assert.Equal(t, injector.Path, *w.ClientConfig.Service.Path)
				assert.Contains(t, w.MatchConditions[0].Expression, injector.AnnotationConfigID)

				np := decode[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", "rel-attestmesh-las"))
				require.Len(t, np.Spec.Ingress, 2)
				lasRule := np.Spec.Ingress[1]
				require.Len(t, lasRule.Ports, 1)
				assert.Equal(t, "las", lasRule.Ports[0].Port.StrVal)
				require.Len(t, lasRule.From, 1)
				assert.Equal(t, map[string]string{injector.LabelInjected: "true"}, lasRule.From[0].PodSelector.MatchLabels, "only injected pods reach the LAS")
				require.NotNil(t, lasRule.From[0].NamespaceSelector)
				assert.Equal(t, w.NamespaceSelector, lasRule.From[0].NamespaceSelector, "in the namespaces the injector sees, not kube-system")

				vap := decode[admissionregv1.ValidatingAdmissionPolicy](t, find(t, objs, "ValidatingAdmissionPolicy", "attestmesh-system-rel-attestmesh-injector-label"))
				require.Len(t, vap.Spec.MatchConstraints.ResourceRules, 1)
				rule := vap.Spec.MatchConstraints.ResourceRules[0]
				assert.Equal(t, []admissionregv1.OperationType{admissionregv1.Update}, rule.Operations, "a label added after creation is refused")
				assert.Equal(t, []string{"pods"}, rule.Resources)
				assert.Equal(t, admissionregv1.Fail, *vap.Spec.FailurePolicy)
				assert.Equal(t, "variables.before == variables.after", vap.Spec.Validations[0].Expression)
				binding := decode[admissionregv1.ValidatingAdmissionPolicyBinding](t, find(t, objs, "ValidatingAdmissionPolicyBinding", "attestmesh-system-rel-attestmesh-injector-label"))
				assert.Equal(t, vap.Name, binding.Spec.PolicyName)
				assert.Equal(t, []admissionregv1.ValidationAction{admissionregv1.Deny}, binding.Spec.ValidationActions)
				for _, p := range np.Spec.Ingress[0].Ports {
					assert.NotEqual(t, "las", p.Port.StrVal, "the open rule leaves out the LAS")
				}

				anchorRole := decode[rbacv1.Role](t, find(t, objs, "Role", "rel-attestmesh-store-anchor"))
				assert.Equal(t, []rbacv1.PolicyRule{{
					APIGroups: []string{""}, Resources: []string{"secrets"},
					ResourceNames: []string{"rel-attestmesh-store-generation"}, Verbs: []string{"get", "patch"},
				}}, anchorRole.Rules, "least privilege: the anchor Secret only")
				anchor := decode[corev1.Secret](t, find(t, objs, "Secret", "rel-attestmesh-store-generation"))
				assert.Equal(t, "keep", anchor.Annotations["helm.sh/resource-policy"])

				sec := decode[corev1.Secret](t, find(t, objs, "Secret", "rel-attestmesh-store-key"))
				assert.Len(t, sec.Data["store-key"], 64, "32 bytes, hex")
				assert.Equal(t, "keep", sec.Annotations["helm.sh/resource-policy"])
			},
		},
		{
			name: "caBundle and url given, existing key, hardware, no dashboard",
			values: map[string]any{
				"simulation":       map[string]any{"enabled": false},
				"hardware":         map[string]any{"collateralConfigMap": "intel-collateral", "lasAddr": "127.0.0.1:18766"},
				"webhook":          map[string]any{"caBundle": pem, "url": "https://127.0.0.1:9443/inject", "failurePolicy": "Ignore"},
				"store":            map[string]any{"key": map[string]any{"existingSecret": "my-key"}, "anchor": map[string]any{"enabled": false}},
				"grafanaDashboard": map[string]any{"enabled": false},
				"serviceMonitor":   map[string]any{"enabled": true},
				"rbac":             map[string]any{"create": false},
				"service":          map[string]any{"clusterIP": "10.96.0.50"},
			},
			want: []string{
				"MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector", "Service/rel-attestmesh",
				"Service/rel-attestmesh-headless", "ServiceAccount/rel-attestmesh", "ServiceMonitor/rel-attestmesh",
				"StatefulSet/rel-attestmesh", "ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				mwc := decode[admissionregv1.MutatingWebhookConfiguration](t, find(t, objs, "MutatingWebhookConfiguration", "attestmesh-system-rel-attestmesh-injector"))
				w := mwc.Webhooks[0]
				assert.Equal(t, pem, string(w.ClientConfig.CABundle))
				assert.Equal(t, "https://127.0.0.1:9443/inject", *w.ClientConfig.URL)
				assert.Equal(t, admissionregv1.Ignore, *w.FailurePolicy)
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				c := ss.Spec.Template.Spec.Containers[0]
				assert.NotContains(t, c.Args, "--simulation")
				assert.Contains(t, c.Args, "--injector-las-addr=127.0.0.1:18766")
				assert.Contains(t, c.Args, "--collateral-dir=/etc/attestmesh/collateral")
				assert.Contains(t, c.Args, "--store-anchor=none")
				assert.False(t, *ss.Spec.Template.Spec.AutomountServiceAccountToken, "no API access needed")
				assert.NotContains(t, c.Args, "--kubernetes")
				assert.Contains(t, c.Args, "--advertise-host=10.96.0.50", "a fixed ClusterIP stands for the DNS name")
				assert.Contains(t, c.Args, "--injector-attest-addr=10.96.0.50:18765")
				svc := decode[corev1.Service](t, find(t, objs, "Service", "rel-attestmesh"))
				assert.Equal(t, "10.96.0.50", svc.Spec.ClusterIP)
				assert.Equal(t, "my-key", ss.Spec.Template.Spec.Volumes[0].Secret.SecretName)
			},
		},
		{
			name: "recovery keys",
			values: map[string]any{"grafanaDashboard": map[string]any{"enabled": false}, "store": map[string]any{"recovery": map[string]any{
				"publicKeys": map[string]any{"alice": recoveryPEM(t, "rsa3072"), "bob": recoveryPEM(t, "x25519-a"), "carol": recoveryPEM(t, "p256-sec1")},
				"threshold":  2,
			}}},
			want: []string{
				"ClusterRole/attestmesh-system-rel-attestmesh-endpoints", "ClusterRole/attestmesh-system-rel-attestmesh-injector",
				"ClusterRoleBinding/attestmesh-system-rel-attestmesh-endpoints", "ClusterRoleBinding/attestmesh-system-rel-attestmesh-injector",
				"ConfigMap/rel-attestmesh-recovery-keys",
				"MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector", "NetworkPolicy/rel-attestmesh-las", "Role/rel-attestmesh-store-anchor",
				"RoleBinding/rel-attestmesh-store-anchor", "Secret/rel-attestmesh-store-generation", "Secret/rel-attestmesh-store-key",
				"Service/rel-attestmesh", "Service/rel-attestmesh-headless", "ServiceAccount/rel-attestmesh", "StatefulSet/rel-attestmesh",
				"ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				cm := decode[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "rel-attestmesh-recovery-keys"))
				assert.Equal(t, map[string]string{"alice.pem": recoveryPEM(t, "rsa3072"), "bob.pem": recoveryPEM(t, "x25519-a"),
					"carol.pem": recoveryPEM(t, "p256-sec1")}, cm.Data)
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				c := ss.Spec.Template.Spec.Containers[0]
				for _, a := range []string{"--recovery-key=/etc/attestmesh/recovery/alice.pem", "--recovery-key=/etc/attestmesh/recovery/bob.pem",
					"--recovery-key=/etc/attestmesh/recovery/carol.pem", "--recovery-threshold=2"} {
					assert.Contains(t, c.Args, a)
				}
				assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "recovery-keys", MountPath: "/etc/attestmesh/recovery", ReadOnly: true})
				var names []string
				for _, v := range ss.Spec.Template.Spec.Volumes {
					names = append(names, v.Name)
					if v.Name == "recovery-keys" {
						assert.Equal(t, "rel-attestmesh-recovery-keys", v.ConfigMap.Name)
					}
				}
				assert.Contains(t, names, "recovery-keys")
			},
		},
		{
			name:   "cert-manager",
			values: map[string]any{"certManager": map[string]any{"enabled": true}, "grafanaDashboard": map[string]any{"enabled": false}},
			want: []string{
				"Certificate/rel-attestmesh-webhook", "ClusterRole/attestmesh-system-rel-attestmesh-endpoints",
				"ClusterRoleBinding/attestmesh-system-rel-attestmesh-endpoints", "Issuer/rel-attestmesh-selfsigned",
				"MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector", "NetworkPolicy/rel-attestmesh-las", "Role/rel-attestmesh-store-anchor",
				"RoleBinding/rel-attestmesh-store-anchor", "Secret/rel-attestmesh-store-generation", "Secret/rel-attestmesh-store-key",
				"Service/rel-attestmesh", "Service/rel-attestmesh-headless", "ServiceAccount/rel-attestmesh", "StatefulSet/rel-attestmesh",
				"ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				mwc := find(t, objs, "MutatingWebhookConfiguration", "attestmesh-system-rel-attestmesh-injector")
				assert.Equal(t, "attestmesh-system/rel-attestmesh-webhook", mwc.Metadata.Annotations["cert-manager.io/inject-ca-from"])
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				assert.Contains(t, ss.Spec.Template.Spec.Containers[0].Args, "--webhook-cert-file=/etc/attestmesh/webhook-tls/tls.crt")
			},
		},
		{
			name:   "three replicas on the bundled etcd",
			values: map[string]any{"replicas": 3, "store": map[string]any{"etcd": map[string]any{"bundled": map[string]any{"enabled": true}}}},
			want: []string{
				"ClusterRole/attestmesh-system-rel-attestmesh-endpoints", "ClusterRole/attestmesh-system-rel-attestmesh-injector",
				"ClusterRoleBinding/attestmesh-system-rel-attestmesh-endpoints", "ClusterRoleBinding/attestmesh-system-rel-attestmesh-injector",
				"ConfigMap/rel-attestmesh-dashboard", "MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector",
				"NetworkPolicy/rel-attestmesh-etcd", "NetworkPolicy/rel-attestmesh-las",
				"PodDisruptionBudget/rel-attestmesh", "PodDisruptionBudget/rel-attestmesh-etcd",
				"Role/rel-attestmesh-store-anchor", "RoleBinding/rel-attestmesh-store-anchor",
				"Secret/rel-attestmesh-etcd-tls", "Secret/rel-attestmesh-store-generation", "Secret/rel-attestmesh-store-key",
				"Service/rel-attestmesh", "Service/rel-attestmesh-etcd", "Service/rel-attestmesh-headless",
				"ServiceAccount/rel-attestmesh", "StatefulSet/rel-attestmesh", "StatefulSet/rel-attestmesh-etcd",
				"ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				assert.Equal(t, int32(3), *ss.Spec.Replicas)
				assert.Equal(t, appsv1.ParallelPodManagement, ss.Spec.PodManagementPolicy)
				assert.Empty(t, ss.Spec.VolumeClaimTemplates, "the store is in etcd: no volume per replica")
				c := ss.Spec.Template.Spec.Containers[0]
				members := "rel-attestmesh-etcd-0.rel-attestmesh-etcd.attestmesh-system.svc:2379,rel-attestmesh-etcd-1.rel-attestmesh-etcd.attestmesh-system.svc:2379," +
					"rel-attestmesh-etcd-2.rel-attestmesh-etcd.attestmesh-system.svc:2379"
				for _, a := range []string{"--store=etcd://" + members, "--etcd-ca=/etc/attestmesh/etcd-tls/ca.crt",
					"--etcd-cert=/etc/attestmesh/etcd-tls/tls.crt", "--etcd-key=/etc/attestmesh/etcd-tls/tls.key",
					"--store-key-file=/etc/attestmesh/store-key/store-key"} {
					assert.Contains(t, c.Args, a)
				}
				anti := ss.Spec.Template.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
				require.Len(t, anti, 1)
				assert.Equal(t, "kubernetes.io/hostname", anti[0].PodAffinityTerm.TopologyKey)
				assert.Equal(t, ss.Spec.Selector.MatchLabels, anti[0].PodAffinityTerm.LabelSelector.MatchLabels, "apart from each other")

				pdb := decode[policyv1.PodDisruptionBudget](t, find(t, objs, "PodDisruptionBudget", "rel-attestmesh"))
				assert.Equal(t, 1, pdb.Spec.MaxUnavailable.IntValue())
				assert.Equal(t, ss.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)

				etcd := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh-etcd"))
				assert.Equal(t, int32(3), *etcd.Spec.Replicas)
				assert.NotEqual(t, ss.Spec.Selector.MatchLabels, etcd.Spec.Selector.MatchLabels, "the control plane's Service must not pick etcd pods")
				ec := etcd.Spec.Template.Spec.Containers[0]
				assert.Equal(t, "quay.io/coreos/etcd:v3.6.16", ec.Image)
				for _, a := range []string{"--client-cert-auth", "--peer-client-cert-auth", "--listen-client-urls=https://0.0.0.0:2379",
					"--initial-cluster=rel-attestmesh-etcd-0=https://rel-attestmesh-etcd-0.rel-attestmesh-etcd.attestmesh-system.svc:2380," +
						"rel-attestmesh-etcd-1=https://rel-attestmesh-etcd-1.rel-attestmesh-etcd.attestmesh-system.svc:2380," +
						"rel-attestmesh-etcd-2=https://rel-attestmesh-etcd-2.rel-attestmesh-etcd.attestmesh-system.svc:2380"} {
					assert.Contains(t, ec.Command, a)
				}
				require.NotNil(t, etcd.Spec.Template.Spec.Affinity)
				epdb := decode[policyv1.PodDisruptionBudget](t, find(t, objs, "PodDisruptionBudget", "rel-attestmesh-etcd"))
				assert.Equal(t, etcd.Spec.Selector.MatchLabels, epdb.Spec.Selector.MatchLabels)

				// The certificates: members' for their DNS names, the control plane's as a client, one CA.
				sec := decode[corev1.Secret](t, find(t, objs, "Secret", "rel-attestmesh-etcd-tls"))
				ca := parseCert(t, sec.Data["ca.crt"])
				server := parseCert(t, sec.Data["server.crt"])
				client := parseCert(t, sec.Data["tls.crt"])
				roots := x509.NewCertPool()
				roots.AddCert(ca)
				_, err := server.Verify(x509.VerifyOptions{Roots: roots, DNSName: "rel-attestmesh-etcd-1.rel-attestmesh-etcd.attestmesh-system.svc"})
				require.NoError(t, err)
				_, err = client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
				require.NoError(t, err)
				assert.NotContains(t, sec.Data, "ca.key", "the CA's key is not kept")

				np := decode[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", "rel-attestmesh-etcd"))
				require.Len(t, np.Spec.Ingress, 3)
				assert.Equal(t, ss.Spec.Selector.MatchLabels, np.Spec.Ingress[0].From[0].PodSelector.MatchLabels, "clients: the control plane")
			},
		},
		{
			name: "two replicas on an existing etcd",
			values: map[string]any{"replicas": 2, "store": map[string]any{"etcd": map[string]any{
				"endpoints": []any{"etcd-a.db:2379", "etcd-b.db:2379"}, "tlsSecret": "my-etcd-client"}}},
			want: []string{
				"ClusterRole/attestmesh-system-rel-attestmesh-endpoints", "ClusterRole/attestmesh-system-rel-attestmesh-injector",
				"ClusterRoleBinding/attestmesh-system-rel-attestmesh-endpoints", "ClusterRoleBinding/attestmesh-system-rel-attestmesh-injector",
				"ConfigMap/rel-attestmesh-dashboard", "MutatingWebhookConfiguration/attestmesh-system-rel-attestmesh-injector",
				"NetworkPolicy/rel-attestmesh-las", "PodDisruptionBudget/rel-attestmesh",
				"Role/rel-attestmesh-store-anchor", "RoleBinding/rel-attestmesh-store-anchor", "Secret/rel-attestmesh-store-generation",
				"Secret/rel-attestmesh-store-key", "Service/rel-attestmesh", "Service/rel-attestmesh-headless",
				"ServiceAccount/rel-attestmesh", "StatefulSet/rel-attestmesh",
				"ValidatingAdmissionPolicy/attestmesh-system-rel-attestmesh-injector-label", "ValidatingAdmissionPolicyBinding/attestmesh-system-rel-attestmesh-injector-label",
			},
			check: func(t *testing.T, objs []object) {
				t.Helper()
				ss := decode[appsv1.StatefulSet](t, find(t, objs, "StatefulSet", "rel-attestmesh"))
				assert.Equal(t, int32(2), *ss.Spec.Replicas)
				assert.Contains(t, ss.Spec.Template.Spec.Containers[0].Args, "--store=etcd://etcd-a.db:2379,etcd-b.db:2379")
				var secretName string
				for _, v := range ss.Spec.Template.Spec.Volumes {
					if v.Name == "etcd-tls" {
						secretName = v.Secret.SecretName
					}
				}
				assert.Equal(t, "my-etcd-client", secretName)
			},
		},
	}
	dir := filepath.Join("attestmesh")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireLintClean(t, dir, tt.values)
			objs := render(t, dir, tt.values)
			assert.Equal(t, tt.want, kinds(objs))
			tt.check(t, objs)
		})
	}
}

func TestControlPlaneChartRefusesBadValues(t *testing.T) {
	ch, err := loader.Load("attestmesh")
	require.NoError(t, err)
	recoveryValues := func(r map[string]any) map[string]any { return map[string]any{"store": map[string]any{"recovery": r}} }
	for name, tc := range map[string]struct {
		values map[string]any
		want   string
	}{
		"neither simulation nor collateral": {map[string]any{"simulation": map[string]any{"enabled": false}}, "set simulation.enabled=true"},
		"tls secret without its CA":         {map[string]any{"webhook": map[string]any{"tlsSecret": "x"}}, "webhook.tlsSecret needs webhook.caBundle"},
		"recovery threshold above the keys": {recoveryValues(map[string]any{"publicKeys": map[string]any{"alice": "PEM"}, "threshold": 2}),
			"store.recovery.threshold 2: want 1 to 1"},
		"recovery threshold zero": {recoveryValues(map[string]any{"publicKeys": map[string]any{"alice": "PEM"}, "threshold": 0}),
			"store.recovery.threshold 0: want 1 to 1"},
		"recovery holder with a slash": {recoveryValues(map[string]any{"publicKeys": map[string]any{"../alice": "PEM"}}),
			`store.recovery.publicKeys "../alice": name holders with letters, digits, - and _`},
		"two replicas on the embedded store": {map[string]any{"replicas": 2}, "replicas 2 needs etcd (store.etcd.endpoints, or store.etcd.bundled.enabled)"},
		"no replica":                         {map[string]any{"replicas": 0}, "replicas 0: want at least 1"},
		"etcd endpoints without TLS": {map[string]any{"store": map[string]any{"etcd": map[string]any{"endpoints": []any{"e:2379"}}}},
			"store.etcd.endpoints needs store.etcd.tlsSecret"},
		"both etcds": {map[string]any{"store": map[string]any{"etcd": map[string]any{"endpoints": []any{"e:2379"}, "tlsSecret": "s",
			"bundled": map[string]any{"enabled": true}}}}, "store.etcd.endpoints and store.etcd.bundled.enabled exclude each other"},
		"even etcd": {map[string]any{"store": map[string]any{"etcd": map[string]any{"bundled": map[string]any{"enabled": true, "replicas": 4}}}},
			"store.etcd.bundled.replicas 4: want an odd number"},
		"recovery keys and removeRecord": {recoveryValues(map[string]any{"publicKeys": map[string]any{"alice": "PEM"}, "removeRecord": true}),
			"store.recovery.removeRecord removes the recovery record"},
	} {
		t.Run(name, func(t *testing.T) {
			vals, err := chartutil.ToRenderValues(ch, tc.values, chartutil.ReleaseOptions{Name: "rel", Namespace: "ns"}, nil)
			require.NoError(t, err)
			_, err = engine.Render(ch, vals)
			require.ErrorContains(t, err, "attestmesh: "+tc.want)
		})
	}
}

func exampleMesh(t *testing.T) *mesh.Mesh {
	t.Helper()
	m, err := mesh.Load(filepath.Join("..", "examples", "flask-redis", "mesh.yaml"))
	require.NoError(t, err)
	return m
}

func TestWriteAppChartMatchesMesh(t *testing.T) {
	m := exampleMesh(t)
	dir := filepath.Join(t.TempDir(), "helm")
	app := m.ChartApp()
	// The API's code, encrypted: the chart carries it in a ConfigMap.
	enc := filepath.Join(t.TempDir(), "app.enc")
	_, _, err := fspf.Encrypt(filepath.Join(m.Dir, "app"), enc, rand.Reader)
	require.NoError(t, err)
	encFiles, err := mesh.FSPFFiles(enc)
	require.NoError(t, err)
	require.Equal(t, "api", app.Services[1].Name)
	app.Services[1].FSPF = &charts.FSPF{Dir: enc, Files: encFiles, MountPath: charts.FSPFMountPath("api")}
	require.NoError(t, charts.WriteAppChart(app, dir, charts.AppChartOptions{Replicas: 2}))
	requireLintClean(t, dir, nil)

	ch, err := loader.Load(dir)
	require.NoError(t, err)
	assert.Equal(t, m.Name, ch.Metadata.Name)

	objs := render(t, dir, nil)
	var deployments, services []string
	for _, o := range objs {
		switch o.Kind {
		case "Deployment":
			deployments = append(deployments, o.Metadata.Name)
		case "Service":
			services = append(services, o.Metadata.Name)
		}
	}
	var want, wantDeployments []string
	for _, s := range m.Services {
		want = append(want, s.Name)
		wantDeployments = append(wantDeployments, "rel-"+s.Name)
	}
	slices.Sort(want)
	slices.Sort(wantDeployments)
	assert.Equal(t, wantDeployments, deployments, "a Deployment per mesh service, named under the release")
	assert.Equal(t, want, services, "a Service per mesh service with ports, named as in the mesh (its DNS name)")

	// The encrypted code: a ConfigMap whose files are the encrypted tree, mounted read-only at
	// the session's fspf_path.
	cm := decode[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "rel-api-fspf"))
	api := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "rel-api"))
	vol := api.Spec.Template.Spec.Volumes
	require.Len(t, vol, 1)
	require.NotNil(t, vol[0].ConfigMap)
	assert.Equal(t, "rel-api-fspf", vol[0].ConfigMap.Name)
	require.Len(t, vol[0].ConfigMap.Items, len(encFiles))
	for _, it := range vol[0].ConfigMap.Items {
		data, err := os.ReadFile(filepath.Join(enc, it.Path))
		require.NoError(t, err)
		assert.Equal(t, data, cm.BinaryData[it.Key], it.Path)
	}
	assert.Equal(t, []corev1.VolumeMount{{Name: "fspf", MountPath: "/attestmesh/fspf/api", ReadOnly: true}},
		api.Spec.Template.Spec.Containers[0].VolumeMounts)

	for _, s := range m.Services {
		t.Run(s.Name, func(t *testing.T) {
			d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "rel-"+s.Name))
			assert.Equal(t, int32(2), *d.Spec.Replicas)
			assert.Equal(t, s.ConfigID, d.Spec.Template.Annotations[injector.AnnotationConfigID])
			require.Len(t, d.Spec.Template.Spec.Containers, 1, "one container: the injector needs no attestmesh.io/container")
			c := d.Spec.Template.Spec.Containers[0]
			assert.Equal(t, []string{s.Binary}, c.Command, "the injector wraps the binary")
			assert.Empty(t, c.Args, "the session supplies the arguments")
			assert.Equal(t, s.Image, c.Image)

			svc := decode[corev1.Service](t, find(t, objs, "Service", s.Name))
			var got, wantPorts []int32
			for _, p := range svc.Spec.Ports {
				got = append(got, p.Port)
				assert.Equal(t, p.Port, p.TargetPort.IntVal)
			}
			for _, p := range s.Ports {
				wantPorts = append(wantPorts, int32(p.Port)) //nolint:gosec // ports are 16-bit
			}
			assert.Equal(t, wantPorts, got)
		})
	}

	// Overriding values works per service.
	objs = render(t, dir, map[string]any{"services": map[string]any{"redis": map[string]any{"replicas": 3, "image": "example.org/redis:8"}}})
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "rel-redis"))
	assert.Equal(t, int32(3), *d.Spec.Replicas)
	assert.Equal(t, "example.org/redis:8", d.Spec.Template.Spec.Containers[0].Image)
}

func TestWriteAppChartRefuses(t *testing.T) {
	good := charts.Service{Name: "a", ConfigID: "s/a", Binary: "/bin/a", Image: "a:1"}
	tests := []struct {
		name string
		m    *charts.App
		want string
	}{
		{"nil", nil, "no services"},
		{"no services", &charts.App{Name: "x"}, "no services"},
		{"bad name", &charts.App{Name: "Bad_Name", Services: []charts.Service{good}}, `mesh name "Bad_Name"`},
		{"bad service", &charts.App{Name: "x", Services: []charts.Service{{Name: "a_b", Binary: "/b"}}}, `service "a_b"`},
		{"no binary", &charts.App{Name: "x", Services: []charts.Service{{Name: "a"}}}, "has no binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := charts.WriteAppChart(tt.m, t.TempDir(), charts.AppChartOptions{})
			require.ErrorContains(t, err, tt.want)
			assert.Contains(t, err.Error(), "charts: ")
		})
	}
}

func TestControlPlaneNotes(t *testing.T) {
	ch, err := loader.Load("attestmesh")
	require.NoError(t, err)
	tests := []struct {
		name   string
		values map[string]any
		want   []string
		not    []string
	}{
		{"defaults", nil,
			[]string{"SIMULATION MODE", "attestmesh controlplane verify --addr 127.0.0.1:8081 --simulation", "refused", "Back up the store key",
				"No recovery keys (store.recovery.publicKeys): if the store key is lost, so is the store."},
			[]string{"curl", "get mutatingwebhookconfiguration attestmesh-system-rel-attestmesh-injector \\"}},
		{"hardware", map[string]any{"simulation": map[string]any{"enabled": false}, "hardware": map[string]any{"collateralConfigMap": "c"}},
			[]string{"get mutatingwebhookconfiguration attestmesh-system-rel-attestmesh-injector", "has no evidence to attest"},
			[]string{"curl", "controlplane verify"}},
		{"hardware, cert-manager, own key", map[string]any{"simulation": map[string]any{"enabled": false}, "hardware": map[string]any{"collateralConfigMap": "c"}, "certManager": map[string]any{"enabled": true},
			"store": map[string]any{"key": map[string]any{"existingSecret": "k"}}},
			[]string{"kubectl get --raw /api/v1/namespaces/attestmesh-system/services/https:rel-attestmesh:https-mgmt/proxy/v1/ca"},
			[]string{"curl", "get mutatingwebhookconfiguration attestmesh-system-rel-attestmesh-injector \\", "Back up the store key"}},
		{"recovery keys", map[string]any{"store": map[string]any{"recovery": map[string]any{
			"publicKeys": map[string]any{"bob": "PEM", "alice": "PEM"}, "threshold": 2}}},
			[]string{"sealed to 2 recovery keys (alice, bob); 2 of their holders can\nbring it back with `attestmesh recover`"},
			[]string{"No recovery keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals, err := chartutil.ToRenderValues(ch, tt.values, chartutil.ReleaseOptions{Name: "rel", Namespace: "attestmesh-system", IsInstall: true}, nil)
			require.NoError(t, err)
			files, err := engine.Render(ch, vals)
			require.NoError(t, err)
			notes := files["attestmesh/templates/NOTES.txt"]
			for _, w := range tt.want {
				assert.Contains(t, notes, w)
			}
			for _, n := range tt.not {
				assert.NotContains(t, notes, n)
			}
		})
	}
}

// recoveryPEM is a recovery test key's public half (controlplane/recovery/testdata, made by openssl).
func recoveryPEM(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "controlplane", "recovery", "testdata", name+".pub.pem"))
	require.NoError(t, err)
	return string(b)
}

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	require.NotNil(t, b, "no PEM block")
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return c
}
