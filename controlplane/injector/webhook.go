package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Path is where the control plane serves the webhook; the chart's
// MutatingWebhookConfiguration points at it.
const Path = "/inject"

// maxReviewBytes bounds an AdmissionReview body (the API server's own limit is 3 MiB for
// objects; a review holds the object once, plus a little).
const maxReviewBytes = 4 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// ServeHTTP answers an admission.k8s.io/v1 AdmissionReview for a pod. Malformed requests get
// an HTTP error; every well-formed review gets a 200 with the response in the review.
func (in *Injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "injector: method not allowed: use POST", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "injector: content type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(w, "injector: read request: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "injector: decode AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "injector: AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	review.Response = in.Review(r.Context(), review.Request)
	review.Request = nil
	review.APIVersion, review.Kind = "admission.k8s.io/v1", "AdmissionReview"
	out, err := json.Marshal(review)
	if err != nil {
		http.Error(w, "injector: encode AdmissionReview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(out); err != nil {
		in.log.Debug("write admission response", "error", err)
	}
}

// Review answers one admission request.
func (in *Injector) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		in.reviews.WithLabelValues(resultSkipped).Inc()
		return resp
	}
	log := in.log.With("namespace", req.Namespace, "pod", podName(req), "uid", req.UID)
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		in.reviews.WithLabelValues(resultError).Inc()
		log.Warn("decode pod", "error", err)
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("injector: decode pod: %v", err))
	}
	ops, err := in.Patch(ctx, &pod)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		in.reviews.WithLabelValues(resultRefused).Inc()
		log.Info("pod refused", "config_id", pod.Annotations[AnnotationConfigID], "reason", refused.Reason)
		return deny(resp, http.StatusUnprocessableEntity, refused.Error())
	case err != nil:
		in.reviews.WithLabelValues(resultError).Inc()
		log.Error("inject pod", "error", err)
		return deny(resp, http.StatusInternalServerError, err.Error())
	case ops == nil:
		in.reviews.WithLabelValues(resultSkipped).Inc()
		return resp
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		in.reviews.WithLabelValues(resultError).Inc()
		return deny(resp, http.StatusInternalServerError, fmt.Sprintf("injector: encode patch: %v", err))
	}
	in.reviews.WithLabelValues(resultInjected).Inc()
	log.Info("pod injected", "config_id", pod.Annotations[AnnotationConfigID], "operations", len(ops))
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp
}

func deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg}
	return resp
}

// podName is the pod's name, or its generateName prefix for pods that a controller creates.
func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var meta struct {
		Metadata struct {
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	if json.Unmarshal(req.Object.Raw, &meta) == nil && meta.Metadata.GenerateName != "" {
		return meta.Metadata.GenerateName + "*"
	}
	return ""
}
