// Package injector is the sidecar-injector: a Kubernetes mutating admission webhook
// (admission.k8s.io/v1) that turns a pod which opts in with the annotation
//
//	attestmesh.io/config-id: SESSION/SERVICE
//
// into an attested workload:
//
//   - an init container (the attestmesh image) copies the image's static sidecar build
//     (attestmesh-sidecar: proxy, launch, install and measure, without the control plane) and
//     the control plane's CA certificate into two in-memory volumes, /attestmesh/bin (as
//     /attestmesh/bin/attestmesh) and /attestmesh/ca;
//   - the sidecar `attestmesh-sidecar proxy --config-id SESSION/SERVICE` runs as a native sidecar (an
//     init container with restartPolicy Always, so it is up before the app starts and stops
//     after it), its readiness on the admin port 15000 /ready;
//   - the app container's command becomes `/attestmesh/bin/attestmesh launch --config-id
//     SESSION/SERVICE ... -- COMMAND[0]`. As in SCONE, the arguments come from the session (its
//     service's `command`), never from the pod: the pod's args are dropped, and the original
//     command and args are kept in the annotation attestmesh.io/original-command for reference;
//   - every directory of the session's injection files gets an emptyDir{medium: Memory} volume
//     in the app container, so secrets never touch a node's disk;
//   - the app container gets CAP_SYS_ADMIN, for the launcher alone: it mounts the injected
//     files and the decrypted code on tmpfs in a private mount namespace and drops the
//     capability from the bounding set before it execs the app;
//   - the sidecar binds its inbound listeners to the pod's IP (--inbound-ip from status.podIP),
//     so that they do not clash with the app's own ports on 127.0.0.1;
//   - the pod is annotated attestmesh.io/injected: "true"; a pod that carries it is not changed
//     again (the patch is empty).
//
// A pod that opts in but cannot be injected is refused, with a message saying why and what to
// change: its app container has no `command` (the webhook cannot know the image's entrypoint),
// it has several containers and no attestmesh.io/container annotation naming the app, or its
// config ID is unknown to the control plane. Pods without the annotation are admitted unchanged.
//
// The CA reaches the pod through the init container's environment rather than through a
// ConfigMap: ConfigMaps are namespaced, the control plane's CA only exists once the control
// plane has started, and this way the injector needs no write access to any namespace.
package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Annotations the injector reads and writes.
const (
	// AnnotationConfigID opts a pod in and names the session and service it attests as.
	AnnotationConfigID = "attestmesh.io/config-id"
	// AnnotationContainer names the app container of a pod with several containers.
	AnnotationContainer = "attestmesh.io/container"
	// AnnotationInjected marks an injected pod ("true").
	AnnotationInjected = "attestmesh.io/injected"
	// LabelInjected marks an injected pod ("true") for selectors: the chart's NetworkPolicy lets
	// only pods with it reach the simulated platform's LAS. Only the injector may set it: a pod
	// that carries it already is refused.
	LabelInjected = "attestmesh.io/injected"
	// AnnotationOriginalCommand keeps the app container's original command and args, as a
	// JSON array, for reference: the launcher takes the arguments from the session instead.
	AnnotationOriginalCommand = "attestmesh.io/original-command"
)

// Paths and names inside an injected pod.
const (
	BinDir       = "/attestmesh/bin"
	BinPath      = BinDir + "/attestmesh"
	CADir        = "/attestmesh/ca"
	CAPath       = CADir + "/ca.pem"
	InitName     = "attestmesh-init"
	SidecarName  = "attestmesh-proxy"
	BinVolume    = "attestmesh-bin"
	CAVolume     = "attestmesh-ca"
	InjectVolume = "attestmesh-inject-"
	AdminPort    = 15000
	caEnv        = "ATTESTMESH_CA_PEM"
	podIPEnv     = "ATTESTMESH_POD_IP"
	// imageBinaryPath is the image's sidecar build (charts/image.SidecarBinaryPath): the init
	// container installs it as the launcher, and the sidecar runs it.
	imageBinaryPath = "/usr/local/bin/attestmesh-sidecar"
)

// ErrUnknownConfigID is wrapped by Sessions.InjectionDirs when no session has the service.
var ErrUnknownConfigID = errors.New("unknown config ID")

// Sessions tells the injector which directories a service's injection files live in.
// Implementations must be safe for concurrent use: the webhook serves requests in parallel.
type Sessions interface {
	// InjectionDirs returns the directories (absolute, clean) of the injection files of the
	// image of the service that configID ("SESSION/SERVICE") names; an error wrapping
	// ErrUnknownConfigID when there is no such session or service.
	InjectionDirs(ctx context.Context, configID string) ([]string, error)
}

// Config configures New.
type Config struct {
	// Image is the attestmesh image (init container and sidecar); required.
	Image string
	// ImagePullPolicy of the injected containers; empty leaves Kubernetes' default.
	ImagePullPolicy corev1.PullPolicy
	// AttestAddr is the control plane's attestation API as the pods reach it (host:port); required.
	AttestAddr string
	// LASAddr is the local attestation service (simulation); empty omits --las-addr.
	LASAddr string
	// CAPEM is the control plane's CA certificate (PEM) that sidecars and launchers pin; required.
	CAPEM []byte
	// Sessions resolves injection directories; required.
	Sessions Sessions
	// SidecarResources are the sidecar's resource requests and limits; zero means none.
	SidecarResources corev1.ResourceRequirements
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer gets the injector's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Injector computes the patches. It is immutable and safe for concurrent use.
type Injector struct {
	cfg     Config
	log     *slog.Logger
	reviews *prometheus.CounterVec
}

// Results counted by attestmesh_injector_reviews_total.
const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultRefused  = "refused"
	resultError    = "error"
)

// New checks cfg and returns an Injector.
func New(cfg Config) (*Injector, error) {
	switch {
	case cfg.Image == "":
		return nil, errors.New("injector: image is empty")
	case cfg.AttestAddr == "":
		return nil, errors.New("injector: attestation address is empty")
	case len(cfg.CAPEM) == 0:
		return nil, errors.New("injector: CA certificate is empty")
	case cfg.Sessions == nil:
		return nil, errors.New("injector: sessions are nil")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Injector{
		cfg: cfg,
		log: log.With("subsystem", "injector"),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_injector_reviews_total",
			Help: "Pod admission reviews by result (injected, skipped, refused, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{resultInjected, resultSkipped, resultRefused, resultError} {
		in.reviews.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(in.reviews); err != nil {
			return nil, fmt.Errorf("injector: register metrics: %w", err)
		}
	}
	return in, nil
}

// RefusedError is a pod that opts in but cannot be injected; its message tells the user what
// to change. The webhook answers it with allowed=false.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "attestmesh injector: " + e.Reason }

func refuse(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// PatchOp is one RFC 6902 JSON Patch operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Patch returns the JSON Patch that injects pod, nil for a pod that did not opt in or is
// already injected, a *RefusedError for a pod that cannot be injected, and another error when
// the injection directories cannot be looked up.
func (in *Injector) Patch(ctx context.Context, pod *corev1.Pod) ([]PatchOp, error) {
	if _, ok := pod.Labels[LabelInjected]; ok {
		return nil, refuse("the pod carries the label %s itself: only the injector sets it (it lets a pod reach the simulated platform's LAS); "+
			"remove it and opt in with the %s annotation", LabelInjected, AnnotationConfigID)
	}
	ann := pod.Annotations
	id, ok := ann[AnnotationConfigID]
	if !ok || ann[AnnotationInjected] == "true" {
		return nil, nil
	}
	if err := checkConfigID(id); err != nil {
		return nil, err
	}
	if pod.Spec.HostNetwork {
		return nil, refuse("the pod uses hostNetwork: its sidecar's grant socket and listeners would be in the node's network namespace, " +
			"where every host process reaches them; remove hostNetwork: true")
	}
	app, err := appContainer(pod)
	if err != nil {
		return nil, err
	}
	c := pod.Spec.Containers[app]
	if len(c.Command) == 0 {
		return nil, refuse("container %q has no command: the webhook cannot know the image's entrypoint; "+
			"set command to the program to attest (the session's service supplies its arguments)", c.Name)
	}
	for _, n := range []string{InitName, SidecarName} {
		if hasContainer(pod, n) {
			return nil, refuse("the pod already has a container named %q but no %s annotation; remove it", n, AnnotationInjected)
		}
	}
	dirs, err := in.cfg.Sessions.InjectionDirs(ctx, id)
	if errors.Is(err, ErrUnknownConfigID) {
		return nil, refuse("config ID %q: %v; create the session first (attestmesh apply -f mesh.yaml) or fix the %s annotation",
			id, err, AnnotationConfigID)
	}
	if err != nil {
		return nil, fmt.Errorf("injector: config ID %q: injection directories: %w", id, err)
	}
	dirs, err = mountDirs(dirs, c)
	if err != nil {
		return nil, err
	}
	return in.patch(pod, app, id, dirs)
}

func (in *Injector) patch(pod *corev1.Pod, app int, id string, dirs []string) ([]PatchOp, error) {
	c := pod.Spec.Containers[app]
	original, err := json.Marshal(slices.Concat(c.Command, c.Args))
	if err != nil {
		return nil, fmt.Errorf("injector: original command: %w", err)
	}
	var ops []PatchOp
	// Annotations.
	if pod.Annotations == nil {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{}})
	}
	for _, kv := range [][2]string{{AnnotationInjected, "true"}, {AnnotationOriginalCommand, string(original)}} {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escape(kv[0]), Value: kv[1]})
	}
	if pod.Labels == nil {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/labels", Value: map[string]string{}})
	}
	ops = append(ops, PatchOp{Op: "add", Path: "/metadata/labels/" + escape(LabelInjected), Value: "true"})
	// Volumes.
	volumes := []corev1.Volume{memoryVolume(BinVolume, "256Mi"), memoryVolume(CAVolume, "1Mi")}
	for i := range dirs {
		volumes = append(volumes, memoryVolume(InjectVolume+strconv.Itoa(i), "64Mi"))
	}
	ops = appendList(ops, "/spec/volumes", len(pod.Spec.Volumes) > 0, volumes)
	// Init container and native sidecar, before any init container of the pod: the app's
	// own init containers may already need the mesh.
	inits := []corev1.Container{in.initContainer(), in.sidecar(id)}
	if len(pod.Spec.InitContainers) == 0 {
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers", Value: inits})
	} else {
		for i, ic := range inits {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers/" + strconv.Itoa(i), Value: ic})
		}
	}
	// The app container.
	base := "/spec/containers/" + strconv.Itoa(app)
	ops = append(ops, PatchOp{Op: "replace", Path: base + "/command", Value: in.launchCommand(id, c.Command[0])})
	if c.Args != nil {
		ops = append(ops, PatchOp{Op: "remove", Path: base + "/args"})
	}
	mounts := []corev1.VolumeMount{
		{Name: BinVolume, MountPath: BinDir, ReadOnly: true},
		{Name: CAVolume, MountPath: CADir, ReadOnly: true},
	}
	for i, d := range dirs {
		mounts = append(mounts, corev1.VolumeMount{Name: InjectVolume + strconv.Itoa(i), MountPath: d})
	}
	ops = appendList(ops, base+"/volumeMounts", len(c.VolumeMounts) > 0, mounts)
	return append(ops, launcherCapability(base, c.SecurityContext)...), nil
}

// launcherCapability adds CAP_SYS_ADMIN to the app container: the launcher needs it to mount
// the injected files and the decrypted code on tmpfs in a mount namespace of its own, where no
// other process sees them (other containers of the pod have mount namespaces of their own and
// do not mount the app's in-memory volumes either). The launcher takes it out of the bounding
// set before it execs the app, so the app never holds it.
func launcherCapability(base string, sc *corev1.SecurityContext) []PatchOp {
	const sysAdmin = corev1.Capability("SYS_ADMIN")
	switch {
	case sc == nil:
		return []PatchOp{{Op: "add", Path: base + "/securityContext", Value: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{sysAdmin}},
		}}}
	case sc.Capabilities == nil:
		return []PatchOp{{Op: "add", Path: base + "/securityContext/capabilities", Value: &corev1.Capabilities{Add: []corev1.Capability{sysAdmin}}}}
	case slices.Contains(sc.Capabilities.Add, sysAdmin) || slices.Contains(sc.Capabilities.Add, "CAP_SYS_ADMIN"):
		return nil
	default:
		return appendList(nil, base+"/securityContext/capabilities/add", len(sc.Capabilities.Add) > 0, []corev1.Capability{sysAdmin})
	}
}

// appendList adds items to the list at p: item by item when the list exists, else the list.
func appendList[T any](ops []PatchOp, p string, exists bool, items []T) []PatchOp {
	if !exists {
		return append(ops, PatchOp{Op: "add", Path: p, Value: items})
	}
	for _, it := range items {
		ops = append(ops, PatchOp{Op: "add", Path: p + "/-", Value: it})
	}
	return ops
}

// escape escapes a JSON Pointer reference token (RFC 6901).
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// memoryVolume is an emptyDir in memory (tmpfs) of at most size; it counts against the pod's
// memory.
func memoryVolume(name, size string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse(size))},
	}}
}

func ptr[T any](v T) *T { return &v }

// attestFlags are the flags that the sidecar and the launcher share.
func (in *Injector) attestFlags(id string) []string {
	f := []string{"--config-id", id, "--attest-addr", in.cfg.AttestAddr, "--ca-file", CAPath}
	if in.cfg.LASAddr != "" {
		f = append(f, "--las-addr", in.cfg.LASAddr)
	}
	return f
}

func (in *Injector) launchCommand(id, program string) []string {
	return slices.Concat([]string{BinPath, "launch"}, in.attestFlags(id), []string{"--", program})
}

// restricted is the security context of the injected containers.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr(true),
		RunAsUser:                ptr(int64(65532)),
		RunAsGroup:               ptr(int64(65532)),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func (in *Injector) initContainer() corev1.Container {
	return corev1.Container{
		Name:            InitName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command:         []string{imageBinaryPath, "install", "--ca-env", caEnv, "--ca-file", CAPath, BinPath},
		Env:             []corev1.EnvVar{{Name: caEnv, Value: string(in.cfg.CAPEM)}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: BinVolume, MountPath: BinDir},
			{Name: CAVolume, MountPath: CADir},
		},
		SecurityContext: restricted(),
	}
}

func (in *Injector) sidecar(id string) corev1.Container {
	probe := func(failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/ready", Port: intstr.FromInt32(AdminPort),
			}},
			PeriodSeconds:    2,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            SidecarName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command: slices.Concat([]string{imageBinaryPath, "proxy"}, in.attestFlags(id),
			[]string{"--admin-addr", ":" + strconv.Itoa(AdminPort), "--inbound-ip", "$(" + podIPEnv + ")"}),
		// Replicas share one configuration; each binds its inbound listeners to its own pod IP.
		Env: []corev1.EnvVar{{Name: podIPEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
		}}},
		RestartPolicy:  ptr(corev1.ContainerRestartPolicyAlways),
		Ports:          []corev1.ContainerPort{{Name: "attestmesh-adm", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: probe(3),
		// The app starts once the sidecar runs; the sidecar attests with the grant that the
		// app's launcher hands it, so it cannot hold the app back until it has attested.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(AdminPort)}},
			PeriodSeconds:    1,
			FailureThreshold: 60,
		},
		Resources:       in.cfg.SidecarResources,
		VolumeMounts:    []corev1.VolumeMount{{Name: CAVolume, MountPath: CADir, ReadOnly: true}},
		SecurityContext: restricted(),
	}
}

func checkConfigID(id string) error {
	if _, _, err := attestapi.SplitConfigID(id); err != nil {
		return refuse("annotation %s: %q is not SESSION/SERVICE", AnnotationConfigID, id)
	}
	return nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, l := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range l {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// appContainer returns the index of the container to wrap.
func appContainer(pod *corev1.Pod) (int, error) {
	cs := pod.Spec.Containers
	name, named := pod.Annotations[AnnotationContainer]
	if !named {
		if len(cs) == 1 {
			return 0, nil
		}
		return 0, refuse("the pod has %d containers (%s): name the one to attest in the annotation %s",
			len(cs), containerNames(cs), AnnotationContainer)
	}
	for i, c := range cs {
		if c.Name == name {
			return i, nil
		}
	}
	return 0, refuse("annotation %s names container %q, but the pod's containers are %s", AnnotationContainer, name, containerNames(cs))
}

func containerNames(cs []corev1.Container) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = strconv.Quote(c.Name)
	}
	return strings.Join(names, ", ")
}

// mountDirs cleans, sorts and deduplicates dirs, drops those below another one, and refuses
// directories that the container already mounts something at or below.
func mountDirs(dirs []string, c corev1.Container) ([]string, error) {
	clean := make([]string, 0, len(dirs))
	for _, d := range dirs {
		if !path.IsAbs(d) {
			return nil, fmt.Errorf("injector: injection directory %q is not absolute", d)
		}
		clean = append(clean, path.Clean(d))
	}
	slices.Sort(clean)
	clean = slices.Compact(clean)
	var out []string
	for _, d := range clean {
		if len(out) > 0 && within(d, out[len(out)-1]) {
			continue
		}
		if d == "/" || within(BinDir, d) || within(CADir, d) || within(d, BinDir) || within(d, CADir) {
			return nil, refuse("the session injects files into %s, which would hide the injector's own volumes; inject elsewhere", d)
		}
		out = append(out, d)
	}
	for _, m := range c.VolumeMounts {
		for _, d := range out {
			if mp := path.Clean(m.MountPath); within(mp, d) || within(d, mp) {
				return nil, refuse("container %q mounts volume %q at %s, but the session injects files into %s, which must be an in-memory volume of its own; remove that mount",
					c.Name, m.Name, m.MountPath, d)
			}
		}
	}
	return out, nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
