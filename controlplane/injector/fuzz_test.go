package injector

import (
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// FuzzServeHTTP feeds arbitrary bodies to the webhook: it never panics, answers malformed
// input with a 4xx, and every patch it returns applies to the pod it was given.
func FuzzServeHTTP(f *testing.F) {
	for _, p := range []*corev1.Pod{
		pod([]corev1.Container{container("redis", []string{"/usr/bin/redis-server"}, nil)}, annotate(AnnotationConfigID, "flask-redis/redis/redis")),
		pod([]corev1.Container{container("api", []string{"/usr/bin/python3"}, []string{"a"})}, annotate(AnnotationConfigID, "flask-redis/flask/flask_restapi")),
		pod([]corev1.Container{container("a", nil, nil), container("b", []string{"/b"}, nil)}, annotate(AnnotationConfigID, "plain/svc", AnnotationContainer, "b")),
		pod([]corev1.Container{container("a", nil, nil)}),
	} {
		b, err := reviewBytes(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"request":{"uid":"u","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":null}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in := newTestInjector(t, nil)
		rec := postReview(t, in, body)
		if rec.Code != http.StatusOK {
			if rec.Code < 400 || rec.Code >= 500 {
				t.Fatalf("status %d for malformed input", rec.Code)
			}
			return
		}
		var in1, out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in1); err != nil {
			t.Fatalf("200 for a body that does not decode: %v", err)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("undecodable response: %v", err)
		}
		if out.Response.UID != in1.Request.UID {
			t.Fatalf("response UID %q, want %q", out.Response.UID, in1.Request.UID)
		}
		if out.Response.Patch == nil {
			return
		}
		patch, err := jsonpatch.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("invalid patch: %v", err)
		}
		// Apply to the pod as the API server sees it (decoded and re-encoded).
		var p corev1.Pod
		if err := json.Unmarshal(in1.Request.Object.Raw, &p); err != nil {
			t.Fatalf("patched a pod that does not decode: %v", err)
		}
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := patch.Apply(raw); err != nil {
			t.Fatalf("patch does not apply: %v\n%s", err, out.Response.Patch)
		}
	})
}
