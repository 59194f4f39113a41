package textemotion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/attune-io/attune/engine/config"
)

// KServe is a client of the Open Inference Protocol (KServe v2 REST) for a
// text-emotion model. It sends the texts of one batch in one request, as
// one BYTES input tensor of shape [N] ([N, 1] for Triton), and reads the
// answer the configured runtime sends (see decode.go):
//
//   - KServeHuggingFace (kserve/kserve python/huggingfaceserver/
//     huggingfaceserver/encoder_model.py, _process_sequence_classification,
//     and python/kserve/kserve/utils/utils.py get_predict_input /
//     get_predict_response): input-0 BYTES; output-0 INT64 class indices
//     [N] by default, or with --return_probabilities / --return_raw_logits
//     output-0 BYTES [N] of str(dict) such as "{0: 0.0094, 1: 0.9906}"
//     (test/e2e/predictor/test_huggingface.py).
//   - Triton (triton-inference-server/server src/http_server.cc,
//     docs/protocol/extension_classification.md): FP32 logits or
//     probabilities [N, K]; with Classification the request names the
//     output with parameters {"classification": K} and the answer is BYTES
//     [N, K] of "value:index[:label]" (value printed by std::to_string,
//     src/classification.cc).
//   - MLServerHuggingFace (SeldonIO/MLServer runtimes/huggingface/
//     mlserver_huggingface/runtime.py and codecs/base.py, jsonlist.py):
//     input "args" BYTES; output "output" BYTES [N, 1] with
//     parameters.content_type "hg_jsonlist", each element a JSON string:
//     {"label": "joy", "score": 0.97}, or a JSON list of them when the
//     pipeline returns every class (top_k=None).
//   - Custom: input "text" BYTES [N]; one FP output of N valences in [-1, 1].
type KServe struct {
	BaseURL string // e.g. http://127.0.0.1:8000
	Model   string
	Timeout time.Duration // per call (one batch); default 500ms
	Client  *http.Client

	// Runtime is a config.ModelRuntime*; empty is Custom.
	Runtime string
	// Labels name the classes by index.
	Labels []string
	// OutputKind is config.ModelOutputLogits, ModelOutputProbabilities or
	// empty (detect per row).
	OutputKind string
	// LabelMap overrides the default label → affect map.
	LabelMap map[string]config.Affect
	// InputName and OutputName override the runtime's tensor names.
	InputName, OutputName string
	// Classification asks Triton for its classification extension.
	Classification bool

	once        sync.Once
	affects     map[string]config.Affect
	byIndex     []config.Affect
	byIndexErr  error
	lowerLabels []string
}

// NewKServe is a client for the configured model server.
func NewKServe(m config.Model, client *http.Client) *KServe {
	return &KServe{BaseURL: m.URL, Model: m.Name, Timeout: m.Timeout.Duration, Client: client,
		Runtime: m.Runtime, Labels: m.Labels, OutputKind: m.OutputKind, LabelMap: m.LabelMap,
		InputName: m.InputName, OutputName: m.OutputName, Classification: m.Classification}
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
	case errors.Is(err, ErrCircuitOpen):
		return "circuit_open"
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
	Name     string   `json:"name"`
	Shape    []int    `json:"shape"`
	Datatype string   `json:"datatype"`
	Data     []string `json:"data"`
}

type requestedOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type inferRequest struct {
	Inputs  []inferTensor     `json:"inputs"`
	Outputs []requestedOutput `json:"outputs,omitempty"`
}

type outputTensor struct {
	Name       string          `json:"name"`
	Shape      []int           `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

type inferResponse struct {
	ModelName string         `json:"model_name"`
	Outputs   []outputTensor `json:"outputs"`
	Error     string         `json:"error"`
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

func (k *KServe) runtime() string {
	if k.Runtime == "" {
		return config.ModelRuntimeCustom
	}
	return k.Runtime
}

// inputName is the runtime's input tensor: KServe's huggingfaceserver reads
// inputs[0] whatever its name (its e2e request calls it "input-0");
// MLServer's HuggingFace runtime passes the input named "args" as the
// pipeline's positional argument; Triton checks the name against the
// model's config.pbtxt ("TEXT" is only our default).
func (k *KServe) inputName() string {
	if k.InputName != "" {
		return k.InputName
	}
	switch k.runtime() {
	case config.ModelRuntimeKServeHuggingFace:
		return "input-0"
	case config.ModelRuntimeTriton:
		return "TEXT"
	case config.ModelRuntimeMLServerHuggingFace:
		return "args"
	}
	return "text"
}

// outputName is the output read: the configured one, else the runtime's
// (KServe get_predict_response "output-0", MLServer "output", Triton
// "logits" by our default); Custom takes its only output.
func (k *KServe) outputName() string {
	if k.OutputName != "" {
		return k.OutputName
	}
	switch k.runtime() {
	case config.ModelRuntimeKServeHuggingFace:
		return "output-0"
	case config.ModelRuntimeTriton:
		return "logits"
	case config.ModelRuntimeMLServerHuggingFace:
		return "output"
	}
	return ""
}

func (k *KServe) request(texts []string) inferRequest {
	in := inferTensor{Name: k.inputName(), Shape: []int{len(texts)}, Datatype: "BYTES", Data: texts}
	req := inferRequest{Inputs: []inferTensor{in}}
	if k.runtime() == config.ModelRuntimeTriton {
		// A batching Triton model with a string input of dims [1] takes
		// shape [batch, 1].
		req.Inputs[0].Shape = []int{len(texts), 1}
		out := requestedOutput{Name: k.outputName()}
		if k.Classification {
			out.Parameters = map[string]any{"classification": len(k.Labels)}
		}
		req.Outputs = []requestedOutput{out}
	}
	return req
}

func (k *KServe) endpoint(suffix string) string {
	return strings.TrimRight(k.BaseURL, "/") + "/v2/models/" + url.PathEscape(k.Model) + suffix
}

// Ready asks GET /v2/models/{model}/ready, which all three servers serve:
// KServe answers 200 {"name","ready"} or 503 (python/kserve/kserve/
// protocol/rest/v2_endpoints.py model_ready, errors.py), Triton 200 or 400
// "Model version not ready" (src/http_server.cc HandleModelReady), MLServer
// 200 or 400 (mlserver/rest/endpoints.py model_ready, utils.py
// to_status_code). The model's endpoint, not /v2/health/ready: a server
// can be up with our model still loading.
func (k *KServe) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.endpoint("/ready"), nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	resp, err := k.client().Do(req)
	if err != nil {
		return classify(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: model %s ready returned %s", ErrUnavailable, k.Model, resp.Status)
	}
	return nil
}

// Score scores one text: the valence of ScoreBatch.
func (k *KServe) Score(ctx context.Context, text string) (float64, error) {
	out, err := k.ScoreBatch(ctx, []string{text})
	if err != nil {
		return 0, err
	}
	return out[0].Valence, nil
}

// maxResponseBytes bounds an answer (a batch of hundreds of texts with
// every class's score fits many times over).
const maxResponseBytes = 8 << 20

// ScoreBatch scores the texts in one POST /v2/models/{model}/infer, within
// the client's timeout.
func (k *KServe) ScoreBatch(ctx context.Context, texts []string) ([]Emotion, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	body, err := json.Marshal(k.request(texts))
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.endpoint("/infer"), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client().Do(req)
	if err != nil {
		return nil, classify(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, classify(ctx, err)
	}
	var out inferResponse
	decodeErr := json.Unmarshal(data, &out)
	if resp.StatusCode != http.StatusOK {
		kind := ErrBadResponse
		if resp.StatusCode >= 500 {
			kind = ErrUnavailable
		}
		return nil, fmt.Errorf("%w: %s: %s", kind, resp.Status, out.Error)
	}
	if decodeErr != nil {
		return nil, fmt.Errorf("%w: status %s, undecodable body: %w", ErrBadResponse, resp.Status, decodeErr)
	}
	return k.decode(&out, len(texts))
}

func classify(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
