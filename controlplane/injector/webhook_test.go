package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

func reviewFor(t *testing.T, p *corev1.Pod) []byte {
	t.Helper()
	b, err := reviewBytes(p)
	require.NoError(t, err)
	return b
}

func reviewBytes(p *corev1.Pod) ([]byte, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("uid-1"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  podResource,
			Namespace: "default",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
}

func postReview(t *testing.T, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decodeResponse(t *testing.T, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	assert.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	assert.Equal(t, "AdmissionReview", out.Kind)
	require.NotNil(t, out.Response)
	assert.Equal(t, types.UID("uid-1"), out.Response.UID)
	return out.Response
}

func TestServeHTTPReviews(t *testing.T) {
	in := newTestInjector(t, nil)
	tests := []struct {
		name      string
		pod       *corev1.Pod
		allowed   bool
		patched   bool
		wantInMsg string
	}{
		{"injected", pod([]corev1.Container{container("redis", []string{"/usr/bin/redis-server"}, nil)},
			annotate(AnnotationConfigID, "flask-redis/redis/redis")), true, true, ""},
		{"not opted in", pod([]corev1.Container{container("redis", nil, nil)}), true, false, ""},
		{"refused", pod([]corev1.Container{container("redis", nil, nil)}, annotate(AnnotationConfigID, "flask-redis/redis/redis")),
			false, false, "has no command"},
		{"lookup failure", pod([]corev1.Container{container("redis", []string{"/r"}, nil)}, annotate(AnnotationConfigID, "broken/svc")),
			false, false, "store unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := decodeResponse(t, postReview(t, in, reviewFor(t, tt.pod)))
			assert.Equal(t, tt.allowed, resp.Allowed)
			if tt.patched {
				require.NotNil(t, resp.PatchType)
				assert.Equal(t, admissionv1.PatchTypeJSONPatch, *resp.PatchType)
				var ops []PatchOp
				require.NoError(t, json.Unmarshal(resp.Patch, &ops))
				assert.NotEmpty(t, ops)
			} else {
				assert.Nil(t, resp.Patch)
			}
			if tt.wantInMsg != "" {
				require.NotNil(t, resp.Result)
				assert.Contains(t, resp.Result.Message, tt.wantInMsg)
			}
		})
	}
}

func TestServeHTTPOtherRequests(t *testing.T) {
	in := newTestInjector(t, nil)
	p := pod([]corev1.Container{container("a", nil, nil)}, annotate(AnnotationConfigID, "plain/svc"))
	var review admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(reviewFor(t, p), &review))

	tests := map[string]func(r *admissionv1.AdmissionRequest){
		"update":      func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update },
		"subresource": func(r *admissionv1.AdmissionRequest) { r.SubResource = "status" },
		"not a pod": func(r *admissionv1.AdmissionRequest) {
			r.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			rv := review
			req := *review.Request
			mutate(&req)
			rv.Request = &req
			b, err := json.Marshal(rv)
			require.NoError(t, err)
			resp := decodeResponse(t, postReview(t, in, b))
			assert.True(t, resp.Allowed, "only pod creation is the injector's business")
			assert.Nil(t, resp.Patch)
		})
	}
}

func TestServeHTTPBadRequests(t *testing.T) {
	in := newTestInjector(t, nil)
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		code        int
	}{
		{"get", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"yaml", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType},
		{"garbage", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json; charset=utf-8", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"too large", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", maxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), tt.method, Path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			rec := httptest.NewRecorder()
			in.ServeHTTP(rec, req)
			assert.Equal(t, tt.code, rec.Code)
			assert.Contains(t, rec.Body.String(), "injector:")
		})
	}
}

func TestServeHTTPBadPod(t *testing.T) {
	in := newTestInjector(t, nil)
	b, err := json.Marshal(admissionv1.AdmissionReview{
		Request: &admissionv1.AdmissionRequest{
			UID: "uid-1", Resource: podResource, Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: []byte(`{"spec":{"containers":"nope"}}`)},
		},
	})
	require.NoError(t, err)
	resp := decodeResponse(t, postReview(t, in, b))
	assert.False(t, resp.Allowed)
	assert.Contains(t, resp.Result.Message, "injector: decode pod")
}
