//go:build e2e_k8s

// Package k8s_test runs attestmesh's Kubernetes integration against a real kube-apiserver and
// etcd on loopback (no kubelet: pods stay Pending, but every create goes through admission):
// helm installs charts/attestmesh, the API server calls the injector over TLS with the
// chart's caBundle, the example's pods come back injected, and helm uninstall removes
// everything. Run it with `make e2e-k8s`.
package k8s_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/fspf"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/kube"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

const (
	cpNamespace  = "attestmesh-system"
	appNamespace = "flask-redis"
	attestAddr   = "attestmesh.attestmesh-system.svc:18765"
	lasAddr      = "attestmesh.attestmesh-system.svc:18766"
	image        = "ghcr.io/attestmesh/attestmesh:e2e"
)

func TestKubernetes(t *testing.T) {
	bin := binaries(t)
	m, sessions := exampleSessions(t)
	attestmesh := buildAttestmesh(t)
	cp := startControlPlane(t, attestmesh)
	c := startCluster(t, bin)
	client, err := kubernetes.NewForConfig(c.rest)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// 1. helm install charts/attestmesh, the webhook pointed at the control plane on this
	// host. No caBundle in the values: the control plane patches its CA in, with the chart's
	// RBAC (done here with a token of the chart's ServiceAccount, as the control plane does
	// in a pod).
	cpRel := helmInstall(t, c, cpNamespace, "attestmesh", filepath.Join("..", "..", "charts", "attestmesh"), map[string]any{
		"image":   map[string]any{"repository": "ghcr.io/attestmesh/attestmesh", "tag": "e2e"},
		"webhook": map[string]any{"url": cp.webhookURL},
		"store":   map[string]any{"key": map[string]any{"keepOnUninstall": false}, "anchor": map[string]any{"keepOnUninstall": false}},
	})
	cpObjects := requireAllExist(t, c, cpRel)
	assert.Contains(t, cpObjects, "MutatingWebhookConfiguration/attestmesh-system-attestmesh-injector")
	assert.Contains(t, cpObjects, "StatefulSet/attestmesh")
	assert.Contains(t, cpObjects, "ClusterRole/attestmesh-system-attestmesh-injector")
	patchCABundleAsControlPlane(ctx, t, c, client, cp.caPEM)

	// 2. `attestmesh apply -f mesh.yaml` uploads the example's sessions and writes its chart;
	// `helm install flaskredis target/helm` installs it.
	appDir := cp.apply(t, m)
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNamespace}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// No controller manager here: create the namespace's default ServiceAccount ourselves.
	_, err = client.CoreV1().ServiceAccounts(appNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	app := helmInstall(t, c, appNamespace, "flaskredis", appDir, nil)
	appObjects := requireAllExist(t, c, app)

	// 3. The example's pods (the Deployments' templates; no controller turns them into pods
	// here) come back from the API server injected.
	for _, s := range m.Services {
		t.Run("injected/"+s.Name, func(t *testing.T) {
			require.Contains(t, appObjects, "Deployment/"+s.Name)
			d, err := client.AppsV1().Deployments(appNamespace).Get(ctx, s.Name, metav1.GetOptions{})
			require.NoError(t, err)
			got, err := client.CoreV1().Pods(appNamespace).Create(ctx, podFrom(d), metav1.CreateOptions{})
			require.NoError(t, err)
			requireInjected(t, got, s, sessions)
		})
	}

	t.Run("not opted in: unchanged", func(t *testing.T) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "plain", Annotations: map[string]string{"team": "records"}},
			Spec: corev1.PodSpec{
				// Without a token volume, the API server adds none: any volume would be the injector's.
				AutomountServiceAccountToken: ptr(false),
				Containers:                   []corev1.Container{{Name: "redis", Image: "redis:7", Command: []string{"/usr/bin/redis-server"}, Args: []string{"--port", "6379"}}},
			},
		}
		got, err := client.CoreV1().Pods(appNamespace).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"team": "records"}, got.Annotations)
		assert.Empty(t, got.Spec.InitContainers)
		require.Len(t, got.Spec.Containers, 1)
		assert.Equal(t, p.Spec.Containers[0].Command, got.Spec.Containers[0].Command)
		assert.Equal(t, p.Spec.Containers[0].Args, got.Spec.Containers[0].Args)
		assert.Empty(t, got.Spec.Volumes)

		// The LAS NetworkPolicy trusts the injector's label; the webhook sees pods only at
		// creation, so the chart's ValidatingAdmissionPolicy refuses adding it later.
		patch := []byte(`{"metadata":{"labels":{"` + injector.LabelInjected + `":"true"}}}`)
		_, err = client.CoreV1().Pods(appNamespace).Patch(ctx, "plain", types.MergePatchType, patch, metav1.PatchOptions{})
		require.Error(t, err, "a label added after creation is refused")
		assert.Contains(t, err.Error(), "the label attestmesh.io/injected is set by the attestmesh injector when a pod is created and cannot be changed")
		other := []byte(`{"metadata":{"labels":{"team":"records"}}}`)
		_, err = client.CoreV1().Pods(appNamespace).Patch(ctx, "plain", types.MergePatchType, other, metav1.PatchOptions{})
		require.NoError(t, err, "other labels change as before")
	})

	refusals := []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"no command", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "nocommand", Annotations: map[string]string{injector.AnnotationConfigID: m.Services[0].ConfigID}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "redis", Image: "redis:7"}}},
		}, `container "redis" has no command`},
		{"unknown config ID", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "unknown", Annotations: map[string]string{injector.AnnotationConfigID: "nosuch/session/svc"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a:1", Command: []string{"/a"}}}},
		}, `config ID "nosuch/session/svc"`},
	}
	for _, tt := range refusals {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			_, err := client.CoreV1().Pods(appNamespace).Create(ctx, tt.pod, metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `admission webhook "inject.attestmesh.io" denied the request`)
			assert.Contains(t, err.Error(), tt.want)
			_, err = client.CoreV1().Pods(appNamespace).Get(ctx, tt.pod.Name, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "a refused pod is not stored")
		})
	}

	// 4. helm uninstall removes everything it installed.
	helmUninstall(t, c, appNamespace, "flaskredis", app)
	helmUninstall(t, c, cpNamespace, "attestmesh", cpRel)
}

// patchCABundleAsControlPlane does what the control plane does at start, with a token of the
// chart's ServiceAccount: patch the CA into its webhook configuration. The same token may do
// nothing else.
func patchCABundleAsControlPlane(ctx context.Context, t *testing.T, c *cluster, client kubernetes.Interface, caPEM []byte) {
	t.Helper()
	tr, err := client.CoreV1().ServiceAccounts(cpNamespace).CreateToken(ctx, "attestmesh", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	tlsCfg, err := rest.TLSConfigFor(c.rest)
	require.NoError(t, err)
	api := &kube.APIServer{URL: c.rest.Host, Token: tr.Status.Token, Client: &http.Client{
		Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg},
	}}
	const mwc = "attestmesh-system-attestmesh-injector"
	require.NoError(t, injector.PatchCABundle(ctx, api, mwc, caPEM))

	// The store's rollback anchor, as the control plane keeps it: the chart's Secret, raised
	// and never lowered, with nothing but get and patch on that one Secret.
	anchor := &kube.SecretAnchor{API: api, Namespace: cpNamespace, Name: "attestmesh-store-generation"}
	gen, err := anchor.Load(ctx)
	require.NoError(t, err)
	assert.Zero(t, gen, "a fresh install has recorded nothing")
	require.NoError(t, anchor.Raise(ctx, 41))
	require.NoError(t, anchor.Raise(ctx, 7), "raising to less is no error")
	gen, err = anchor.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(41), gen, "and lowers nothing")
	other := &kube.SecretAnchor{API: api, Namespace: cpNamespace, Name: "attestmesh-store-key"}
	_, err = other.Load(ctx)
	var se *kube.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusForbidden, se.Code, "the store key itself is not readable with the control plane's token")
	got, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwc, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, caPEM, got.Webhooks[0].ClientConfig.CABundle)

	sa := rest.CopyConfig(c.rest)
	sa.BearerToken, sa.BearerTokenFile = tr.Status.Token, ""
	saClient, err := kubernetes.NewForConfig(sa)
	require.NoError(t, err)
	_, err = saClient.CoreV1().Secrets(cpNamespace).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "least privilege: no secrets (%v)", err)
	_, err = saClient.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "least privilege: no pods (%v)", err)
	_, err = saClient.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "least privilege: only its own webhook configuration (%v)", err)
}

func ptr[T any](v T) *T { return &v }

// exampleSessions loads examples/flask-redis and parses its sessions, expanded as `apply`
// would (measured variables get placeholder values: nothing is attested here).
func exampleSessions(t *testing.T) (*mesh.Mesh, map[string]*session.Session) {
	t.Helper()
	m, err := mesh.Load(filepath.Join("..", "..", "examples", "flask-redis", "mesh.yaml"))
	require.NoError(t, err)
	vars := map[string]string{}
	for name, v := range m.Variables {
		vars[name] = v.Value
		if v.Measure != "" {
			vars[name] = strings.Repeat("ab", 32)
		}
	}
	for _, s := range m.Services {
		if s.FSPF == nil {
			continue
		}
		dst := filepath.Join(t.TempDir(), "enc")
		key, tag, err := fspf.Encrypt(filepath.Join(m.Dir, s.FSPF.Src), dst, rand.Reader)
		require.NoError(t, err)
		p := mesh.FSPFVarPrefix(s.Name)
		vars[p+"_FSPF_PATH"], vars[p+"_FSPF_KEY"], vars[p+"_FSPF_TAG"] = dst, key.Hex(), tag.String()
	}
	docs, err := m.Documents(vars)
	require.NoError(t, err)
	out := map[string]*session.Session{}
	for _, d := range docs {
		s, err := session.Parse(d)
		require.NoError(t, err)
		out[s.Name] = s
	}
	return m, out
}

func helmConfig(t *testing.T, c *cluster, namespace string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &c.kubeconfig, &namespace
	cfg := new(action.Configuration)
	require.NoError(t, cfg.Init(flags, namespace, "secret", func(format string, v ...any) { t.Logf("helm: "+format, v...) }))
	return cfg
}

func helmInstall(t *testing.T, c *cluster, namespace, name, chartDir string, values map[string]any) *release.Release {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	install := action.NewInstall(helmConfig(t, c, namespace))
	install.ReleaseName, install.Namespace, install.CreateNamespace = name, namespace, true
	install.Timeout = 2 * time.Minute
	rel, err := install.RunWithContext(t.Context(), ch, values)
	require.NoError(t, err, "helm install %s", chartDir)
	require.Equal(t, release.StatusDeployed, rel.Info.Status)
	return rel
}

// requireAllExist checks that every object of the release's manifest is in the API server
// and returns them as Kind/name.
func requireAllExist(t *testing.T, c *cluster, rel *release.Release) []string {
	t.Helper()
	cfg := helmConfig(t, c, rel.Namespace)
	resources, err := cfg.KubeClient.Build(bytes.NewBufferString(rel.Manifest), false)
	require.NoError(t, err)
	require.NotEmpty(t, resources)
	var names []string
	require.NoError(t, resources.Visit(func(info *resource.Info, err error) error {
		if err != nil {
			return err
		}
		names = append(names, info.Mapping.GroupVersionKind.Kind+"/"+info.Name)
		return info.Get()
	}))
	slices.Sort(names)
	t.Logf("release %s: %d objects accepted: %s", rel.Name, len(names), strings.Join(names, ", "))
	return names
}

func helmUninstall(t *testing.T, c *cluster, namespace, name string, rel *release.Release) {
	t.Helper()
	cfg := helmConfig(t, c, namespace)
	un := action.NewUninstall(cfg)
	un.Wait, un.Timeout = true, time.Minute
	resp, err := un.Run(name)
	require.NoError(t, err)
	assert.Empty(t, resp.Info, "nothing kept")
	resources, err := cfg.KubeClient.Build(bytes.NewBufferString(rel.Manifest), false)
	require.NoError(t, err)
	require.NoError(t, resources.Visit(func(info *resource.Info, err error) error {
		if err != nil {
			return err
		}
		err = info.Get()
		assert.True(t, apierrors.IsNotFound(err), "%s/%s still there after helm uninstall (%v)", info.Mapping.GroupVersionKind.Kind, info.Name, err)
		return nil
	}))
}

// podFrom is the pod a Deployment's controller would create.
func podFrom(d *appsv1.Deployment) *corev1.Pod {
	tmpl := d.Spec.Template.DeepCopy()
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		GenerateName: d.Name + "-", Labels: tmpl.Labels, Annotations: tmpl.Annotations,
	}, Spec: tmpl.Spec}
}

func requireInjected(t *testing.T, got *corev1.Pod, s mesh.Service, sessions map[string]*session.Session) {
	t.Helper()
	if testing.Verbose() {
		b, err := yaml.Marshal(got.Spec)
		if err == nil {
			t.Logf("pod %s as the API server stored it:\n%s", got.Name, b)
		}
	}
	assert.Equal(t, "true", got.Annotations[injector.AnnotationInjected])
	assert.Equal(t, `["`+s.Binary+`"]`, got.Annotations[injector.AnnotationOriginalCommand])

	require.Len(t, got.Spec.InitContainers, 2)
	assert.Equal(t, injector.InitName, got.Spec.InitContainers[0].Name)
	assert.Equal(t, image, got.Spec.InitContainers[0].Image)
	side := got.Spec.InitContainers[1]
	assert.Equal(t, injector.SidecarName, side.Name)
	require.NotNil(t, side.RestartPolicy, "a native sidecar")
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *side.RestartPolicy)
	assert.Equal(t, []string{"/usr/local/bin/attestmesh", "proxy", "--config-id", s.ConfigID, "--attest-addr", attestAddr,
		"--ca-file", injector.CAPath, "--las-addr", lasAddr, "--admin-addr", ":15000"}, side.Command)
	require.NotNil(t, side.ReadinessProbe)
	assert.Equal(t, "/ready", side.ReadinessProbe.HTTPGet.Path)

	require.Len(t, got.Spec.Containers, 1)
	app := got.Spec.Containers[0]
	assert.Equal(t, []string{injector.BinPath, "launch", "--config-id", s.ConfigID, "--attest-addr", attestAddr,
		"--ca-file", injector.CAPath, "--las-addr", lasAddr, "--", s.Binary}, app.Command)
	assert.Empty(t, app.Args)

	sessName, svcName, err := attestapi.SplitConfigID(s.ConfigID)
	require.NoError(t, err)
	dirs, err := injector.InjectionDirs(sessions[sessName], svcName)
	require.NoError(t, err)
	mounts := map[string]string{}
	for _, vm := range app.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	for _, d := range append([]string{injector.BinDir, injector.CADir}, dirs...) {
		assert.Contains(t, mounts, d, "app container mounts %s", d)
	}
	memory := 0
	for _, v := range got.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory && strings.HasPrefix(v.Name, "attestmesh-") {
			memory++
		}
	}
	assert.GreaterOrEqual(t, memory, 3, "bin, CA and at least one injection directory in memory")
	if len(dirs) == 0 {
		require.NoError(t, errors.New("the example's services all inject files"))
	}
}
