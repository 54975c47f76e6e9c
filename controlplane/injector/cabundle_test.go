package injector

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	"github.com/attestmesh/attestmesh/controlplane/kube"
)

// fakeAPIServer serves one MutatingWebhookConfiguration and applies JSON patches to it.
type fakeAPIServer struct {
	mu      sync.Mutex
	obj     []byte
	patches int
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mwc" {
		http.Error(w, `{"message":"mutatingwebhookconfigurations \"x\" not found"}`, http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodGet:
		_, _ = w.Write(f.obj)
	case http.MethodPatch:
		if r.Header.Get("Content-Type") != "application/json-patch+json" {
			http.Error(w, `{"message":"bad content type"}`, http.StatusUnsupportedMediaType)
			return
		}
		body, _ := io.ReadAll(r.Body)
		p, err := jsonpatch.DecodePatch(body)
		if err == nil {
			f.obj, err = p.Apply(f.obj)
		}
		if err != nil {
			http.Error(w, `{"message":"`+err.Error()+`"}`, http.StatusUnprocessableEntity)
			return
		}
		f.patches++
		_, _ = w.Write(f.obj)
	}
}

func TestPatchCABundle(t *testing.T) {
	fake := &fakeAPIServer{obj: []byte(`{"metadata":{"name":"mwc"},"webhooks":[
		{"name":"inject.attestmesh.io","clientConfig":{"url":"https://x/inject"}},
		{"name":"other.attestmesh.io","clientConfig":{"caBundle":"b2xk"}}]}`)}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	api := &kube.APIServer{URL: srv.URL, Token: "tok", Client: srv.Client()}

	require.NoError(t, PatchCABundle(t.Context(), api, "mwc", []byte(testCA)))
	var got struct {
		Webhooks []struct {
			ClientConfig struct {
				URL      string `json:"url"`
				CABundle []byte `json:"caBundle"`
			} `json:"clientConfig"`
		} `json:"webhooks"`
	}
	require.NoError(t, json.Unmarshal(fake.obj, &got))
	require.Len(t, got.Webhooks, 2)
	for _, w := range got.Webhooks {
		assert.Equal(t, testCA, string(w.ClientConfig.CABundle))
	}
	assert.Equal(t, "https://x/inject", got.Webhooks[0].ClientConfig.URL, "the rest is untouched")
	assert.Equal(t, 1, fake.patches)

	require.NoError(t, PatchCABundle(t.Context(), api, "mwc", []byte(testCA)))
	assert.Equal(t, 1, fake.patches, "nothing to do the second time")

	tests := []struct {
		name string
		api  *kube.APIServer
		mwc  string
		want string
	}{
		{"not found", api, "nosuch", "404 Not Found"},
		{"unauthorized", &kube.APIServer{URL: srv.URL, Token: "bad", Client: srv.Client()}, "mwc", "401 Unauthorized: Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := PatchCABundle(t.Context(), tt.api, tt.mwc, []byte(testCA))
			require.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, "kube: GET")
		})
	}
}

func TestInClusterAPIServerOutsideACluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := kube.InCluster()
	require.ErrorContains(t, err, "not in a Kubernetes pod")
}
