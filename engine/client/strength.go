package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/attune-io/attune/engine/contract"
)

// PushStrength sends the tuned values the operator has just rendered into
// the program's ConfigMap (PUT /v1/admin/strength, the tune scope), so
// the engine runs them before the kubelet delivers the file. Idempotent:
// the same push again changes nothing.
func (c *Client) PushStrength(ctx context.Context, st contract.Strength) (contract.StrengthPushResult, error) {
	body, err := json.Marshal(contract.StrengthPush{Strength: st, Generation: st.Generation()})
	if err != nil {
		return contract.StrengthPushResult{}, fmt.Errorf("encode strength push: %w", err)
	}
	var out contract.StrengthPushResult
	_, err = c.call(ctx, &request{method: http.MethodPut, path: contract.PathStrength, body: body, contentType: contract.ContentTypeJSON, safe: true, want: http.StatusOK}, &out)
	return out, err
}
