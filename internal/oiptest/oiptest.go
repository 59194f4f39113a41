// Package oiptest is an Open Inference Protocol (KServe v2 REST) model
// server for tests and local clusters. It answers as the real servers do,
// byte for byte where their sources show the bytes:
//
//   - KServeHuggingFace: kserve/kserve python/huggingfaceserver/
//     huggingfaceserver/encoder_model.py (_process_sequence_classification:
//     argmax index; with --return_probabilities {j: float(f"{p:.4f}")}; with
//     --return_raw_logits {j: logit}), python/kserve/kserve/utils/utils.py
//     (get_predict_response: one output "output-0", INT64 [N] or BYTES [N]
//     of str(dict)), python/kserve/kserve/protocol/infer_type.py
//     (InferResponse.to_rest: id, model_name, model_version, outputs;
//     orjson, compact), errors.py and protocol/rest/v2_endpoints.py
//     (ready bodies and status codes), test/e2e/predictor/
//     test_huggingface.py (expected answers).
//   - Triton: triton-inference-server/server src/http_server.cc (response
//     JSON: model_name, model_version as a string, outputs of name,
//     datatype, shape, data; ready 200/400 with an empty body),
//     src/classification.cc and docs/protocol/extension_classification.md
//     (std::to_string(value) + ":" + index [+ ":" + label], BYTES
//     [batch, count]).
//   - MLServerHuggingFace: SeldonIO/MLServer runtimes/huggingface/
//     mlserver_huggingface/codecs/base.py (encode_response: one output
//     "output"), codecs/jsonlist.py (BYTES [N, 1], parameters.content_type
//     hg_jsonlist, each element json.dumps of the pipeline's dict),
//     docs/examples/huggingface/README.md (the answer's shape),
//     mlserver/rest/endpoints.py and utils.py (ready 200/400).
//   - Custom: the engine's original single-valence contract.
//
// Each server counts the requests it receives and the texts of each, can
// be slowed down, made unready or made to fail.
package oiptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Runtime is the server imitated.
type Runtime string

// Runtimes.
const (
	KServeHuggingFace   Runtime = "kserve-hf"
	Triton              Runtime = "triton"
	MLServerHuggingFace Runtime = "mlserver-hf"
	Custom              Runtime = "custom"
)

// Runtimes are all runtimes, for flags.
var Runtimes = []Runtime{KServeHuggingFace, Triton, MLServerHuggingFace, Custom}

// Fault makes the server misbehave.
type Fault string

// Faults.
const (
	FaultNone Fault = ""
	// Fault500 answers 500 with the runtime's error body.
	Fault500 Fault = "500"
	// Fault503 answers 503 (model not ready).
	Fault503 Fault = "503"
	// FaultMalformed answers 200 with a body that is not JSON.
	FaultMalformed Fault = "malformed"
	// FaultWrongCount answers one element fewer than texts were sent.
	FaultWrongCount Fault = "wrong-count"
	// FaultClassIndexFP32 answers the top class index as FP32 [N] (1.0,
	// 0.0, …), which no client may take for a valence.
	FaultClassIndexFP32 Fault = "fp32-class-index"
	// FaultWrongDatatype answers bare label names (BYTES) where the runtime
	// sends numbers, dict reprs or classification strings, and INT64 where
	// it sends hg_jsonlist or classification strings.
	FaultWrongDatatype Fault = "wrong-datatype"
	// FaultHang does not answer until the client gives up (or 30s).
	FaultHang Fault = "hang"
)

// Model scores one text: one logit per label.
type Model func(text string) []float64

// EkmanLabels are the 7-class Ekman emotion labels (as ordered by e.g.
// j-hartmann/emotion-english-distilroberta-base).
var EkmanLabels = []string{"anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"}

// SentimentLabels are 3-class sentiment labels.
var SentimentLabels = []string{"negative", "neutral", "positive"}

// DefaultKeywords drive KeywordModel: a text containing a word scores its
// label.
var DefaultKeywords = map[string][]string{
	"anger":    {"angry", "furious", "rage", "hate"},
	"disgust":  {"disgusting", "gross", "revolting"},
	"fear":     {"afraid", "scared", "terrified", "anxious"},
	"joy":      {"happy", "great", "love", "calm", "wonderful"},
	"sadness":  {"sad", "miserable", "lonely", "cry"},
	"surprise": {"wow", "surprised", "unexpected"},
	"positive": {"good", "happy", "great", "love", "calm", "wonderful"},
	"negative": {"bad", "awful", "hate", "sad", "terrible", "angry"},
}

// KeywordModel is a deterministic "model": each keyword of a label found
// in the lower-cased text adds 4 to that label's logit; a text with none
// gets logit 2 for "neutral" (when a label).
func KeywordModel(labels []string, keywords map[string][]string) Model {
	return func(text string) []float64 {
		t := strings.ToLower(text)
		logits := make([]float64, len(labels))
		hit := false
		for i, l := range labels {
			for _, w := range keywords[strings.ToLower(l)] {
				if strings.Contains(t, w) {
					logits[i] += 4
					hit = true
				}
			}
		}
		if !hit {
			if i := slices.Index(labels, "neutral"); i >= 0 {
				logits[i] = 2
			}
		}
		return logits
	}
}

// Options configure a Server.
type Options struct {
	Runtime   Runtime
	ModelName string   // default "emotion"
	Labels    []string // default EkmanLabels
	Model     Model    // default KeywordModel(Labels, DefaultKeywords)
	// Latency delays every inference answer.
	Latency time.Duration
	// ReturnProbabilities and ReturnRawLogits are KServe huggingfaceserver's
	// flags of those names.
	ReturnProbabilities, ReturnRawLogits bool
	// TritonLabels: the Triton model has a label file, so classification
	// strings carry labels. TritonProbabilities: its output is softmaxed.
	TritonLabels, TritonProbabilities bool
	// MLServerAllScores: the pipeline returns every class (top_k=None).
	MLServerAllScores bool
	// InputName is the input Triton's model config declares (default TEXT);
	// OutputName its output (default logits).
	InputName, OutputName string
}

// Received is one inference request as the server saw it.
type Received struct {
	// Inputs is the number of input tensors; Texts the elements of the
	// first (the texts of the batch).
	Inputs int
	Texts  []string
	// Classification is the Triton classification count asked for (0: none).
	Classification int
}

// Server is a fake model server; its zero value is not usable (New).
type Server struct {
	o Options

	mu       sync.Mutex
	fault    Fault
	unready  bool
	received []Received
	seq      int
}

// New returns a server; serve it with ServeHTTP (or Start).
func New(o Options) *Server {
	if o.ModelName == "" {
		o.ModelName = "emotion"
	}
	if len(o.Labels) == 0 {
		o.Labels = EkmanLabels
	}
	if o.Model == nil {
		o.Model = KeywordModel(o.Labels, DefaultKeywords)
	}
	if o.Runtime == "" {
		o.Runtime = Custom
	}
	if o.InputName == "" {
		o.InputName = "TEXT"
	}
	if o.OutputName == "" {
		o.OutputName = "logits"
	}
	return &Server{o: o}
}

// Start serves s on a loopback port until the returned server is closed.
func Start(o Options) (*Server, *httptest.Server) {
	s := New(o)
	return s, httptest.NewServer(s)
}

// SetFault makes the following answers fail so (FaultNone: answer well).
func (s *Server) SetFault(f Fault) { s.mu.Lock(); s.fault = f; s.mu.Unlock() }

// SetReady makes the ready endpoints answer ready or not.
func (s *Server) SetReady(ready bool) { s.mu.Lock(); s.unready = !ready; s.mu.Unlock() }

// Received returns the inference requests so far.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// Requests is the number of inference requests so far.
func (s *Server) Requests() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.received) }

// Texts are all texts received so far, in order.
func (s *Server) Texts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.received {
		out = append(out, r.Texts...)
	}
	return out
}

// Reset forgets the requests received.
func (s *Server) Reset() { s.mu.Lock(); s.received = nil; s.mu.Unlock() }

func (s *Server) state() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault, !s.unready
}

// ServeHTTP implements the v2 endpoints the engine uses.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && path == "/v2/health/live":
		s.readyAnswer(w, true, "")
	case r.Method == http.MethodGet && path == "/v2/health/ready":
		_, ready := s.state()
		s.readyAnswer(w, ready, "")
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v2/models/") && strings.HasSuffix(path, "/ready"):
		name := strings.TrimSuffix(strings.TrimPrefix(path, "/v2/models/"), "/ready")
		if name != s.o.ModelName {
			s.unknownModel(w, name)
			return
		}
		_, ready := s.state()
		s.readyAnswer(w, ready, name)
	case r.Method == http.MethodPost && strings.HasPrefix(path, "/v2/models/") && strings.HasSuffix(path, "/infer"):
		name := strings.TrimSuffix(strings.TrimPrefix(path, "/v2/models/"), "/infer")
		if name != s.o.ModelName {
			s.unknownModel(w, name)
			return
		}
		s.infer(w, r)
	default:
		writeRaw(w, http.StatusNotFound, []byte(`{"detail":"Not Found"}`))
	}
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	if len(body) > 0 {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// errorBody is {"error":"…"}, compact (starlette JSONResponse, orjson,
// TritonJson all write it without spaces).
func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

func (s *Server) readyAnswer(w http.ResponseWriter, ready bool, model string) {
	switch s.o.Runtime {
	case Triton:
		// HandleServerHealth / HandleModelReady: 200 or 400.
		switch {
		case ready:
			writeRaw(w, http.StatusOK, nil)
		case model != "":
			writeRaw(w, http.StatusBadRequest, errorBody("Model version not ready"))
		default:
			writeRaw(w, http.StatusBadRequest, nil)
		}
	case MLServerHuggingFace:
		// Response(status_code=to_status_code(ready)): a JSON null body.
		if ready {
			writeRaw(w, http.StatusOK, []byte("null"))
		} else {
			writeRaw(w, http.StatusBadRequest, []byte("null"))
		}
	default: // KServe and Custom
		switch {
		case ready && model != "":
			writeRaw(w, http.StatusOK, []byte(`{"name":`+jsonString(model)+`,"ready":true}`))
		case ready:
			writeRaw(w, http.StatusOK, []byte(`{"ready":true}`))
		case model != "":
			writeRaw(w, http.StatusServiceUnavailable, errorBody("Model with name "+model+" is not ready."))
		default:
			writeRaw(w, http.StatusServiceUnavailable, errorBody("Server is not ready."))
		}
	}
}

func (s *Server) unknownModel(w http.ResponseWriter, name string) {
	switch s.o.Runtime {
	case Triton:
		writeRaw(w, http.StatusBadRequest, errorBody("Request for unknown model: '"+name+"' is not found"))
	case MLServerHuggingFace:
		writeRaw(w, http.StatusNotFound, errorBody("Model "+name+" not found"))
	default:
		writeRaw(w, http.StatusNotFound, errorBody("Model with name "+name+" does not exist."))
	}
}

type request struct {
	ID     string `json:"id"`
	Inputs []struct {
		Name     string          `json:"name"`
		Shape    []int           `json:"shape"`
		Datatype string          `json:"datatype"`
		Data     json.RawMessage `json:"data"`
	} `json:"inputs"`
	Outputs []struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters"`
	} `json:"outputs"`
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Inputs) == 0 {
		writeRaw(w, http.StatusBadRequest, errorBody(fmt.Sprintf("Unrecognized request format: %v", err)))
		return
	}
	in := req.Inputs[0]
	var texts []string
	if in.Datatype != "BYTES" || json.Unmarshal(in.Data, &texts) != nil {
		writeRaw(w, http.StatusBadRequest, errorBody("input "+in.Name+": want BYTES strings"))
		return
	}
	rec := Received{Inputs: len(req.Inputs), Texts: texts}
	for _, o := range req.Outputs {
		if c, ok := o.Parameters["classification"].(float64); ok {
			rec.Classification = int(c)
		}
	}
	s.mu.Lock()
	s.received = append(s.received, rec)
	s.seq++
	id := req.ID
	if id == "" {
		id = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.seq)
	}
	s.mu.Unlock()

	switch s.o.Runtime {
	case Triton:
		// Triton checks inputs against the model configuration.
		if in.Name != s.o.InputName {
			writeRaw(w, http.StatusBadRequest, errorBody(fmt.Sprintf("[request id: %s] unexpected inference input '%s' for model '%s'", orUnknown(req.ID), in.Name, s.o.ModelName)))
			return
		}
		if len(in.Shape) != 2 || in.Shape[0] != len(texts) || in.Shape[1] != 1 {
			writeRaw(w, http.StatusBadRequest, errorBody(fmt.Sprintf("[request id: %s] unexpected shape for input '%s' for model '%s'. Expected [-1,1], got %v", orUnknown(req.ID), in.Name, s.o.ModelName, in.Shape)))
			return
		}
	case MLServerHuggingFace:
		if in.Name != "args" {
			writeRaw(w, http.StatusBadRequest, errorBody("input "+in.Name+": the HuggingFace runtime passes only \"args\" to the pipeline"))
			return
		}
	}

	fault, _ := s.state()
	if fault == FaultHang {
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		return
	}
	if s.o.Latency > 0 {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(s.o.Latency):
		}
	}
	switch fault {
	case Fault500:
		writeRaw(w, http.StatusInternalServerError, errorBody(s.internalError()))
		return
	case Fault503:
		writeRaw(w, http.StatusServiceUnavailable, errorBody("Model with name "+s.o.ModelName+" is not ready."))
		return
	case FaultMalformed:
		writeRaw(w, http.StatusOK, []byte("<html>upstream connect error</html>"))
		return
	}
	logits := make([][]float64, len(texts))
	for i, t := range texts {
		logits[i] = s.o.Model(t)
	}
	if fault == FaultWrongCount && len(logits) > 0 {
		logits = logits[:len(logits)-1]
	}
	var body []byte
	switch fault {
	case FaultClassIndexFP32:
		data := make([]string, len(logits))
		for i, l := range logits {
			data[i] = rapidDouble(float64(argmax(l)))
		}
		body = s.envelope(id, output{name: s.outputName(), datatype: "FP32", shape: []int{len(logits)}, data: data})
	case FaultWrongDatatype:
		data := make([]string, len(logits))
		for i, l := range logits {
			data[i] = jsonString(s.o.Labels[argmax(l)])
		}
		dt := "BYTES"
		if s.o.Runtime == MLServerHuggingFace || (s.o.Runtime == Triton && rec.Classification > 0) {
			dt = "INT64"
			for i, l := range logits {
				data[i] = strconv.Itoa(argmax(l))
			}
		}
		body = s.envelope(id, output{name: s.outputName(), datatype: dt, shape: []int{len(logits)}, data: data})
	default:
		body = s.answer(id, logits, rec.Classification)
	}
	writeRaw(w, http.StatusOK, body)
}

func orUnknown(id string) string {
	if id == "" {
		return "<id_unknown>"
	}
	return id
}

func (s *Server) internalError() string {
	if s.o.Runtime == Triton {
		return "onnx runtime error 6: CUDA failure 2: out of memory"
	}
	// KServe generic_exception_handler: f"{type(exc).__name__} : {str(exc)}".
	return "RuntimeError : CUDA out of memory. Tried to allocate 20.00 MiB"
}

func (s *Server) outputName() string {
	switch s.o.Runtime {
	case KServeHuggingFace:
		return "output-0"
	case MLServerHuggingFace:
		return "output"
	case Triton:
		return s.o.OutputName
	}
	return "valence"
}

// output is one output tensor, its data elements already JSON-encoded.
type output struct {
	name, datatype string
	shape          []int
	params         string // JSON object or ""
	data           []string
}

func shapeJSON(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.Itoa(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// envelope writes the runtime's response object around one output.
func (s *Server) envelope(id string, o output) []byte {
	var b bytes.Buffer
	data := "[" + strings.Join(o.data, ",") + "]"
	name := jsonString(o.name)
	switch s.o.Runtime {
	case Triton:
		// src/http_server.cc: model_name, model_version (a string),
		// outputs of name, datatype, shape, [parameters,] data.
		fmt.Fprintf(&b, `{"model_name":%s,"model_version":"1","outputs":[{"name":%s,"datatype":%s,"shape":%s`, jsonString(s.o.ModelName), name, jsonString(o.datatype), shapeJSON(o.shape))
		if o.params != "" {
			fmt.Fprintf(&b, `,"parameters":%s`, o.params)
		}
		fmt.Fprintf(&b, `,"data":%s}]}`, data)
	case MLServerHuggingFace:
		// InferenceResponse: model_name, id, parameters, outputs of name,
		// shape, datatype, parameters, data (docs/examples/huggingface).
		fmt.Fprintf(&b, `{"model_name":%s,"id":%s,"parameters":{},"outputs":[{"name":%s,"shape":%s,"datatype":%s`, jsonString(s.o.ModelName), jsonString(id), name, shapeJSON(o.shape), jsonString(o.datatype))
		if o.params != "" {
			fmt.Fprintf(&b, `,"parameters":%s`, o.params)
		}
		fmt.Fprintf(&b, `,"data":%s}]}`, data)
	default:
		// InferResponse.to_rest: id, model_name, model_version, outputs of
		// name, shape, datatype, [parameters,] data.
		fmt.Fprintf(&b, `{"id":%s,"model_name":%s,"model_version":null,"outputs":[{"name":%s,"shape":%s,"datatype":%s`, jsonString(id), jsonString(s.o.ModelName), name, shapeJSON(o.shape), jsonString(o.datatype))
		if o.params != "" {
			fmt.Fprintf(&b, `,"parameters":%s`, o.params)
		}
		fmt.Fprintf(&b, `,"data":%s}]}`, data)
	}
	return b.Bytes()
}

// answer is the runtime's well-formed answer for the texts' logits.
func (s *Server) answer(id string, logits [][]float64, classification int) []byte {
	n := len(logits)
	switch s.o.Runtime {
	case KServeHuggingFace:
		data := make([]string, n)
		if !s.o.ReturnProbabilities && !s.o.ReturnRawLogits {
			for i, l := range logits {
				data[i] = strconv.Itoa(argmax(l))
			}
			return s.envelope(id, output{name: "output-0", datatype: "INT64", shape: []int{n}, data: data})
		}
		for i, l := range logits {
			entries := make([]string, len(l))
			for j, v := range l {
				f32 := float64(float32(v))
				if s.o.ReturnProbabilities {
					// float(f"{probs[j]:.4f}") of the float32 softmax.
					p := float64(float32(softmax(l)[j]))
					f32, _ = strconv.ParseFloat(strconv.FormatFloat(p, 'f', 4, 64), 64)
				}
				entries[j] = strconv.Itoa(j) + ": " + pyRepr(f32)
			}
			data[i] = jsonString("{" + strings.Join(entries, ", ") + "}")
		}
		return s.envelope(id, output{name: "output-0", datatype: "BYTES", shape: []int{n}, data: data})
	case Triton:
		K := len(s.o.Labels)
		scores := logits
		if s.o.TritonProbabilities {
			scores = make([][]float64, n)
			for i, l := range logits {
				scores[i] = softmax(l)
			}
		}
		if classification > 0 {
			count := min(classification, K)
			data := make([]string, 0, n*count)
			for _, row := range scores {
				idx := make([]int, K)
				for j := range idx {
					idx[j] = j
				}
				sort.SliceStable(idx, func(a, b int) bool { return float32(row[idx[a]]) > float32(row[idx[b]]) })
				for _, j := range idx[:count] {
					str := fmt.Sprintf("%f:%d", float32(row[j]), j)
					if s.o.TritonLabels {
						str += ":" + s.o.Labels[j]
					}
					data = append(data, jsonString(str))
				}
			}
			return s.envelope(id, output{name: s.o.OutputName, datatype: "BYTES", shape: []int{n, count}, data: data})
		}
		data := make([]string, 0, n*K)
		for _, row := range scores {
			for _, v := range row {
				data = append(data, rapidDouble(float64(float32(v))))
			}
		}
		return s.envelope(id, output{name: s.o.OutputName, datatype: "FP32", shape: []int{n, K}, data: data})
	case MLServerHuggingFace:
		data := make([]string, n)
		for i, l := range logits {
			p := softmax(l)
			if s.o.MLServerAllScores {
				idx := make([]int, len(p))
				for j := range idx {
					idx[j] = j
				}
				sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
				items := make([]string, len(idx))
				for k, j := range idx {
					items[k] = hgItem(s.o.Labels[j], p[j])
				}
				data[i] = jsonString("[" + strings.Join(items, ", ") + "]")
				continue
			}
			j := argmax(l)
			data[i] = jsonString(hgItem(s.o.Labels[j], p[j]))
		}
		return s.envelope(id, output{name: "output", datatype: "BYTES", shape: []int{n, 1}, params: `{"content_type":"hg_jsonlist"}`, data: data})
	}
	// Custom: the valence of the distribution, positive labels +1,
	// negative −1, neutral 0.
	data := make([]string, n)
	for i, l := range logits {
		var v float64
		for j, p := range softmax(l) {
			v += p * customSign(s.o.Labels[j])
		}
		data[i] = rapidDouble(float64(float32(v)))
	}
	return s.envelope(id, output{name: "valence", datatype: "FP32", shape: []int{n}, data: data})
}

func customSign(label string) float64 {
	switch strings.ToLower(label) {
	case "joy", "positive", "surprise":
		return 1
	case "neutral":
		return 0
	}
	return -1
}

// hgItem is json.dumps({"label": l, "score": s}) of a float32 score
// (Python's default separators ", " and ": ").
func hgItem(label string, score float64) string {
	return `{"label": ` + jsonString(label) + `, "score": ` + pyRepr(float64(float32(score))) + `}`
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func softmax(l []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range l {
		m = max(m, v)
	}
	out := make([]float64, len(l))
	var sum float64
	for i, v := range l {
		out[i] = math.Exp(v - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// pyRepr is Python's repr of a float: the shortest round-tripping digits,
// fixed notation for 1e-4 <= |v| < 1e16 (with ".0" when integral), else
// exponent notation ("1e-05").
func pyRepr(v float64) string {
	a := math.Abs(v)
	if v == 0 || (a >= 1e-4 && a < 1e16) {
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(s, ".") {
			s += ".0"
		}
		return s
	}
	return strconv.FormatFloat(v, 'e', -1, 64)
}

// rapidDouble is how RapidJSON (TritonJson) writes a double: shortest
// digits, fixed notation with ".0" when integral for 1e-6 <= |v| < 1e21,
// else "1e-7" style.
func rapidDouble(v float64) string {
	a := math.Abs(v)
	if v == 0 || (a >= 1e-6 && a < 1e21) {
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	s := strconv.FormatFloat(v, 'e', -1, 64)
	s = strings.Replace(s, "e+", "e", 1)
	s = strings.Replace(s, "e-0", "e-", 1)
	return s
}
