package textemotion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// KServe is a client of the Open Inference Protocol (KServe v2) for a text
// emotion model: it sends one BYTES input tensor holding the text and
// expects one numeric output, the valence in [-1, 1].
type KServe struct {
	BaseURL string // e.g. http://127.0.0.1:8000
	Model   string
	Timeout time.Duration // per call; default 500ms
	Client  *http.Client
}

// Error kinds a KServe call can fail with; Reason maps them to metric labels.
var (
	ErrTimeout     = errors.New("model server timed out")
	ErrUnavailable = errors.New("model server unavailable")
	ErrBadResponse = errors.New("model server sent a bad response")
)

// Reason returns a metric label for a scoring error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrBadResponse):
		return "bad_response"
	default:
		return "error"
	}
}

type inferTensor struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Datatype string `json:"datatype"`
	Data     []any  `json:"data"`
}

type inferRequest struct {
	Inputs []inferTensor `json:"inputs"`
}

type inferResponse struct {
	ModelName string `json:"model_name"`
	Outputs   []struct {
		Name     string            `json:"name"`
		Shape    []int             `json:"shape"`
		Datatype string            `json:"datatype"`
		Data     []json.RawMessage `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func (k *KServe) client() *http.Client {
	if k.Client != nil {
		return k.Client
	}
	return http.DefaultClient
}

func (k *KServe) timeout() time.Duration {
	if k.Timeout > 0 {
		return k.Timeout
	}
	return 500 * time.Millisecond
}

// Ready asks GET /v2/health/ready.
func (k *KServe) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(k.BaseURL, "/")+"/v2/health/ready", nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	resp, err := k.client().Do(req)
	if err != nil {
		return classify(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: ready returned %s", ErrUnavailable, resp.Status)
	}
	return nil
}

// Score calls POST /v2/models/{model}/infer.
func (k *KServe) Score(ctx context.Context, text string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	body, _ := json.Marshal(inferRequest{Inputs: []inferTensor{{Name: "text", Shape: []int{1}, Datatype: "BYTES", Data: []any{text}}}})
	endpoint := strings.TrimRight(k.BaseURL, "/") + "/v2/models/" + url.PathEscape(k.Model) + "/infer"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client().Do(req)
	if err != nil {
		return 0, classify(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, classify(ctx, err)
	}
	var out inferResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, fmt.Errorf("%w: status %s, undecodable body: %w", ErrBadResponse, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 {
			return 0, fmt.Errorf("%w: %s: %s", ErrUnavailable, resp.Status, out.Error)
		}
		return 0, fmt.Errorf("%w: %s: %s", ErrBadResponse, resp.Status, out.Error)
	}
	if len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 1 {
		return 0, fmt.Errorf("%w: want one output with one value, got %d outputs", ErrBadResponse, len(out.Outputs))
	}
	switch out.Outputs[0].Datatype {
	case "FP16", "FP32", "FP64":
	default:
		return 0, fmt.Errorf("%w: output datatype %q, want FP32", ErrBadResponse, out.Outputs[0].Datatype)
	}
	var v float64
	if err := json.Unmarshal(out.Outputs[0].Data[0], &v); err != nil || math.IsNaN(v) || v < -1 || v > 1 {
		return 0, fmt.Errorf("%w: output %s is not a valence in [-1, 1]", ErrBadResponse, out.Outputs[0].Data[0])
	}
	return v, nil
}

func classify(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
