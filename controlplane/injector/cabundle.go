package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/attestmesh/attestmesh/controlplane/kube"
)

// PatchCABundle sets caBundle to caPEM in every webhook of the MutatingWebhookConfiguration
// name (the chart's RBAC allows get and patch on that one object only). It is what the control
// plane does at start when neither the chart's values nor cert-manager provide the bundle.
func PatchCABundle(ctx context.Context, api *kube.APIServer, name string, caPEM []byte) error {
	u := api.URL + "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + name
	var cfg struct {
		Webhooks []struct {
			Name         string `json:"name"`
			ClientConfig struct {
				CABundle []byte `json:"caBundle"`
			} `json:"clientConfig"`
		} `json:"webhooks"`
	}
	body, err := api.Do(ctx, http.MethodGet, u, "", nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return fmt.Errorf("injector: decode MutatingWebhookConfiguration %s: %w", name, err)
	}
	var ops []PatchOp
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			continue
		}
		// Test the webhook's name so that a concurrent change of the list fails the patch.
		base := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops,
			PatchOp{Op: "test", Path: base + "/name", Value: w.Name},
			PatchOp{Op: "add", Path: base + "/clientConfig/caBundle", Value: caPEM})
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("injector: encode caBundle patch: %w", err)
	}
	_, err = api.Do(ctx, http.MethodPatch, u, "application/json-patch+json", patch)
	return err
}
