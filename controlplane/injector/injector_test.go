package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var update = flag.Bool("update", false, "rewrite the golden patches in testdata/")

const testCA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

// fakeSessions maps config IDs to injection directories; "broken/svc" fails.
type fakeSessions map[string][]string

func (f fakeSessions) InjectionDirs(_ context.Context, id string) ([]string, error) {
	if id == "broken/svc" {
		return nil, errors.New("store unavailable")
	}
	dirs, ok := f[id]
	if !ok {
		return nil, fmt.Errorf("no session for %q: %w", id, ErrUnknownConfigID)
	}
	return dirs, nil
}

var sessions = fakeSessions{
	"flask-redis/redis/redis":         {"/tls", "/tls"},
	"flask-redis/flask/flask_restapi": {"/tls", "/etc/app/conf", "/etc/app"},
	"plain/svc":                       nil,
}

func newTestInjector(t *testing.T, reg prometheus.Registerer) *Injector {
	t.Helper()
	in, err := New(Config{
		Image:           "registry.example.com/attestmesh:test",
		ImagePullPolicy: corev1.PullIfNotPresent,
		AttestAddr:      "attestmesh.attestmesh-system.svc:18765",
		LASAddr:         "attestmesh.attestmesh-system.svc:18766",
		CAPEM:           []byte(testCA),
		Sessions:        sessions,
		Registerer:      reg,
	})
	require.NoError(t, err)
	return in
}

type podOpt func(*corev1.Pod)

func annotate(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func container(name string, command, args []string) corev1.Container {
	return corev1.Container{Name: name, Image: name + ":1", Command: command, Args: args}
}

func pod(containers []corev1.Container, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: containers},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func TestPatchGolden(t *testing.T) {
	in := newTestInjector(t, nil)
	tests := []struct {
		name string
		pod  *corev1.Pod
	}{
		{"redis-single-container", pod(
			[]corev1.Container{container("redis", []string{"/usr/bin/redis-server"}, nil)},
			annotate(AnnotationConfigID, "flask-redis/redis/redis"))},
		{"api-args-dropped-existing-lists", pod(
			[]corev1.Container{container("api", []string{"/usr/bin/python3"}, []string{"app.py", "--debug"})},
			annotate(AnnotationConfigID, "flask-redis/flask/flask_restapi", "team", "records"),
			func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				p.Spec.InitContainers = []corev1.Container{container("migrate", []string{"/migrate"}, nil)}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
			})},
		{"named-container-of-two", pod(
			[]corev1.Container{container("log-shipper", nil, nil), container("app", []string{"/app"}, nil)},
			annotate(AnnotationConfigID, "plain/svc", AnnotationContainer, "app"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := in.Patch(t.Context(), tt.pod)
			require.NoError(t, err)
			got, err := json.MarshalIndent(ops, "", "  ")
			require.NoError(t, err)
			got = append(got, '\n')
			golden := filepath.Join("testdata", tt.name+".json")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o600))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./controlplane/injector -run TestPatchGolden -update")
			assert.JSONEq(t, string(want), string(got))
		})
	}
}

// applyPatch applies ops to p the way the API server does.
func applyPatch(t *testing.T, p *corev1.Pod, ops []PatchOp) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(p)
	require.NoError(t, err)
	pb, err := json.Marshal(ops)
	require.NoError(t, err)
	patch, err := jsonpatch.DecodePatch(pb)
	require.NoError(t, err)
	out, err := patch.Apply(raw)
	require.NoError(t, err)
	var res corev1.Pod
	require.NoError(t, json.Unmarshal(out, &res))
	return &res
}

func TestPatchResult(t *testing.T) {
	in := newTestInjector(t, nil)
	orig := pod([]corev1.Container{container("api", []string{"/usr/bin/python3"}, []string{"app.py"})},
		annotate(AnnotationConfigID, "flask-redis/flask/flask_restapi"))
	ops, err := in.Patch(t.Context(), orig)
	require.NoError(t, err)
	got := applyPatch(t, orig, ops)

	assert.Equal(t, "true", got.Annotations[AnnotationInjected])
	assert.JSONEq(t, `["/usr/bin/python3","app.py"]`, got.Annotations[AnnotationOriginalCommand])
	require.Len(t, got.Spec.InitContainers, 2)
	assert.Equal(t, InitName, got.Spec.InitContainers[0].Name)
	assert.Contains(t, got.Spec.InitContainers[0].Env, corev1.EnvVar{Name: caEnv, Value: testCA})
	side := got.Spec.InitContainers[1]
	assert.Equal(t, SidecarName, side.Name)
	require.NotNil(t, side.RestartPolicy)
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *side.RestartPolicy)
	assert.Equal(t, []string{imageBinaryPath, "proxy", "--config-id", "flask-redis/flask/flask_restapi",
		"--attest-addr", "attestmesh.attestmesh-system.svc:18765", "--ca-file", CAPath,
		"--las-addr", "attestmesh.attestmesh-system.svc:18766", "--admin-addr", ":15000",
		"--inbound-ip", "$(ATTESTMESH_POD_IP)"}, side.Command)
	require.Len(t, side.Env, 1)
	assert.Equal(t, "status.podIP", side.Env[0].ValueFrom.FieldRef.FieldPath, "the sidecar binds its pod's IP")
	require.NotNil(t, side.ReadinessProbe)
	assert.Equal(t, "/ready", side.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, int32(AdminPort), side.ReadinessProbe.HTTPGet.Port.IntVal)

	app := got.Spec.Containers[0]
	assert.Equal(t, []string{BinPath, "launch", "--config-id", "flask-redis/flask/flask_restapi",
		"--attest-addr", "attestmesh.attestmesh-system.svc:18765", "--ca-file", CAPath,
		"--las-addr", "attestmesh.attestmesh-system.svc:18766", "--", "/usr/bin/python3"}, app.Command)
	assert.Nil(t, app.Args, "the session supplies the arguments")
	require.NotNil(t, app.SecurityContext)
	assert.Equal(t, []corev1.Capability{"SYS_ADMIN"}, app.SecurityContext.Capabilities.Add,
		"for the launcher's mount namespace; it drops it before the exec")
	mounts := map[string]string{}
	for _, m := range app.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	assert.Equal(t, map[string]string{
		BinDir: BinVolume, CADir: CAVolume, "/etc/app": InjectVolume + "0", "/tls": InjectVolume + "1",
	}, mounts, "/etc/app/conf is covered by /etc/app")
	require.Len(t, got.Spec.Volumes, 4)
	for _, v := range got.Spec.Volumes {
		require.NotNil(t, v.EmptyDir, v.Name)
		assert.Equal(t, corev1.StorageMediumMemory, v.EmptyDir.Medium, v.Name)
	}

	assert.Equal(t, "true", got.Labels[LabelInjected], "the label that lets it reach the LAS")
	require.NotNil(t, side.StartupProbe)
	assert.Equal(t, "/healthz", side.StartupProbe.HTTPGet.Path, "the app starts before the sidecar attests: it hands the sidecar its grant")

	// The webhook sees a pod once (reinvocationPolicy: Never): one that arrives with the label
	// was labelled by its author, not by the injector.
	_, err = in.Patch(t.Context(), got)
	require.ErrorContains(t, err, "the pod carries the label attestmesh.io/injected itself")
}

// TestLauncherCapability: CAP_SYS_ADMIN joins what the pod's author set, once.
func TestLauncherCapability(t *testing.T) {
	in := newTestInjector(t, nil)
	for name, tt := range map[string]struct {
		sc   *corev1.SecurityContext
		want []corev1.Capability
	}{
		"none":              {nil, []corev1.Capability{"SYS_ADMIN"}},
		"no capabilities":   {&corev1.SecurityContext{RunAsUser: ptr(int64(0))}, []corev1.Capability{"SYS_ADMIN"}},
		"others":            {&corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}, []corev1.Capability{"NET_ADMIN", "SYS_ADMIN"}},
		"drops only":        {&corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW"}}}, []corev1.Capability{"SYS_ADMIN"}},
		"already there":     {&corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}, []corev1.Capability{"SYS_ADMIN"}},
		"already, prefixed": {&corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CAP_SYS_ADMIN"}}}, []corev1.Capability{"CAP_SYS_ADMIN"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := container("redis", []string{"/usr/bin/redis-server"}, nil)
			c.SecurityContext = tt.sc
			orig := pod([]corev1.Container{c}, annotate(AnnotationConfigID, "flask-redis/redis/redis"))
			ops, err := in.Patch(t.Context(), orig)
			require.NoError(t, err)
			got := applyPatch(t, orig, ops).Spec.Containers[0].SecurityContext
			require.NotNil(t, got)
			assert.Equal(t, tt.want, got.Capabilities.Add)
			if tt.sc != nil && tt.sc.RunAsUser != nil {
				assert.Equal(t, tt.sc.RunAsUser, got.RunAsUser, "the rest of the author's context stays")
			}
		})
	}
}

func TestPatchNothingToDo(t *testing.T) {
	in := newTestInjector(t, nil)
	tests := map[string]*corev1.Pod{
		"no annotations": pod([]corev1.Container{container("a", nil, nil)}),
		"no opt-in":      pod([]corev1.Container{container("a", nil, nil)}, annotate("other", "x")),
		"already injected": pod([]corev1.Container{container("a", []string{"/a"}, nil)},
			annotate(AnnotationConfigID, "plain/svc", AnnotationInjected, "true")),
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			ops, err := in.Patch(t.Context(), p)
			require.NoError(t, err)
			assert.Nil(t, ops)
		})
	}
}

func TestPatchRefused(t *testing.T) {
	in := newTestInjector(t, nil)
	one := func(c corev1.Container, opts ...podOpt) *corev1.Pod { return pod([]corev1.Container{c}, opts...) }
	withID := func(id string) podOpt { return annotate(AnnotationConfigID, id) }
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"no command", one(container("redis", nil, []string{"--port", "6379"}), withID("plain/svc")),
			[]string{`container "redis" has no command`, "entrypoint", "set command"}},
		{"several containers", pod([]corev1.Container{container("a", []string{"/a"}, nil), container("b", []string{"/b"}, nil)}, withID("plain/svc")),
			[]string{`2 containers ("a", "b")`, AnnotationContainer}},
		{"named container missing", pod([]corev1.Container{container("a", []string{"/a"}, nil)}, withID("plain/svc"), annotate(AnnotationContainer, "c")),
			[]string{`names container "c"`, `"a"`}},
		{"unknown config ID", one(container("a", []string{"/a"}, nil), withID("nosuch/svc")),
			[]string{`config ID "nosuch/svc"`, "unknown config ID", "attestmesh apply"}},
		{"malformed config ID", one(container("a", []string{"/a"}, nil), withID("justasession")),
			[]string{`"justasession" is not SESSION/SERVICE`}},
		{"trailing slash", one(container("a", []string{"/a"}, nil), withID("s/")),
			[]string{`"s/" is not SESSION/SERVICE`}},
		{"mount over injection dir", one(func() corev1.Container {
			c := container("redis", []string{"/usr/bin/redis-server"}, nil)
			c.VolumeMounts = []corev1.VolumeMount{{Name: "certs", MountPath: "/tls/ca"}}
			return c
		}(), withID("flask-redis/redis/redis")),
			[]string{`mounts volume "certs" at /tls/ca`, "injects files into /tls"}},
		{"label set by the pod's author", func() *corev1.Pod {
			p := one(container("a", []string{"/a"}, nil))
			p.Labels = map[string]string{LabelInjected: "true"}
			return p
		}(), []string{"the pod carries the label attestmesh.io/injected itself: only the injector sets it"}},
		{"host network", func() *corev1.Pod {
			p := one(container("a", []string{"/a"}, nil), withID("plain/svc"))
			p.Spec.HostNetwork = true
			return p
		}(), []string{"the pod uses hostNetwork: its sidecar's grant socket"}},
		{"sidecar name taken", pod([]corev1.Container{container("a", []string{"/a"}, nil), container(SidecarName, []string{"/p"}, nil)},
			withID("plain/svc"), annotate(AnnotationContainer, "a")),
			[]string{`named "attestmesh-proxy"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := in.Patch(t.Context(), tt.pod)
			require.Error(t, err)
			assert.Nil(t, ops)
			var re *RefusedError
			require.ErrorAs(t, err, &re)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestPatchLookupError(t *testing.T) {
	in := newTestInjector(t, nil)
	_, err := in.Patch(t.Context(), pod([]corev1.Container{container("a", []string{"/a"}, nil)},
		annotate(AnnotationConfigID, "broken/svc")))
	require.Error(t, err)
	var re *RefusedError
	assert.NotErrorAs(t, err, &re, "a lookup failure is not the pod's fault")
	assert.Contains(t, err.Error(), "store unavailable")
}

func TestMountDirs(t *testing.T) {
	tests := []struct {
		name    string
		dirs    []string
		want    []string
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"dedup and nest", []string{"/b/c", "/a", "/b", "/a/"}, []string{"/a", "/b"}, ""},
		{"sibling prefix is not nesting", []string{"/tls", "/tls2"}, []string{"/tls", "/tls2"}, ""},
		{"relative", []string{"tls"}, nil, "not absolute"},
		{"root", []string{"/"}, nil, "hide the injector's own volumes"},
		{"over bin", []string{"/attestmesh"}, nil, "hide the injector's own volumes"},
		{"inside ca", []string{"/attestmesh/ca/x"}, nil, "hide the injector's own volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mountDirs(tt.dirs, corev1.Container{Name: "c"})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestNewValidates(t *testing.T) {
	good := Config{Image: "i", AttestAddr: "a:1", CAPEM: []byte(testCA), Sessions: sessions}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"image", func(c *Config) { c.Image = "" }, "image is empty"},
		{"attest", func(c *Config) { c.AttestAddr = "" }, "attestation address is empty"},
		{"ca", func(c *Config) { c.CAPEM = nil }, "CA certificate is empty"},
		{"sessions", func(c *Config) { c.Sessions = nil }, "sessions are nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			_, err := New(c)
			require.ErrorContains(t, err, tt.want)
		})
	}
	reg := prometheus.NewPedanticRegistry()
	_, err := New(Config{Image: "i", AttestAddr: "a:1", CAPEM: []byte(testCA), Sessions: sessions, Registerer: reg})
	require.NoError(t, err)
	_, err = New(Config{Image: "i", AttestAddr: "a:1", CAPEM: []byte(testCA), Sessions: sessions, Registerer: reg})
	require.ErrorContains(t, err, "injector: register metrics")
}

func TestEscape(t *testing.T) {
	assert.Equal(t, "attestmesh.io~1config-id", escape("attestmesh.io/config-id"))
	assert.Equal(t, "a~0b~1c", escape("a~b/c"))
	assert.True(t, bytes.Contains([]byte(escape(AnnotationInjected)), []byte("~1")))
}

func TestMetricsCount(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	in := newTestInjector(t, reg)
	ok := pod([]corev1.Container{container("a", []string{"/a"}, nil)}, annotate(AnnotationConfigID, "plain/svc"))
	bad := pod([]corev1.Container{container("a", nil, nil)}, annotate(AnnotationConfigID, "plain/svc"))
	for _, p := range []*corev1.Pod{ok, ok, bad} {
		rec := postReview(t, in, reviewFor(t, p))
		require.Equal(t, 200, rec.Code)
	}
	assert.InDelta(t, 2, testutil.ToFloat64(in.reviews.WithLabelValues(resultInjected)), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(in.reviews.WithLabelValues(resultRefused)), 0)
	n, err := testutil.GatherAndCount(reg, "attestmesh_injector_reviews_total")
	require.NoError(t, err)
	assert.Equal(t, 4, n, "every result is exported from the start")
}
