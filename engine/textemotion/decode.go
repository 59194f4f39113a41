package textemotion

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/attune-io/attune/engine/config"
)

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadResponse}, args...)...)
}

// init resolves the labels' affects once.
func (k *KServe) init() {
	k.once.Do(func() {
		k.affects = affectMap(k.LabelMap)
		for _, l := range k.Labels {
			k.lowerLabels = append(k.lowerLabels, strings.ToLower(l))
			a, ok := k.affects[strings.ToLower(l)]
			if !ok && k.byIndexErr == nil {
				k.byIndexErr = badf("label %q has no valence/arousal: add it to model.labelMap", l)
			}
			k.byIndex = append(k.byIndex, a)
		}
	})
}

// pick selects the output to read.
func (k *KServe) pick(out *inferResponse) (*outputTensor, error) {
	if len(out.Outputs) == 0 {
		return nil, badf("no outputs in the answer")
	}
	name := k.outputName()
	names := make([]string, len(out.Outputs))
	for i := range out.Outputs {
		names[i] = out.Outputs[i].Name
		if name != "" && out.Outputs[i].Name == name {
			return &out.Outputs[i], nil
		}
	}
	if len(out.Outputs) == 1 && k.OutputName == "" {
		return &out.Outputs[0], nil
	}
	if name == "" {
		return nil, badf("want one output (a valence per text), got %d: %v", len(out.Outputs), names)
	}
	return nil, badf("want output %q, got %v", name, names)
}

func isFloat(dt string) bool { return dt == "FP16" || dt == "FP32" || dt == "FP64" }

func isInt(dt string) bool {
	switch dt {
	case "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64":
		return true
	}
	return false
}

func isBytes(dt string) bool { return dt == "BYTES" || dt == "STRING" }

// expected says, per runtime, which answers decode — the message of every
// bad_response about an unexpected form.
func (k *KServe) expected(n int) string {
	switch k.runtime() {
	case config.ModelRuntimeKServeHuggingFace:
		return fmt.Sprintf("want INT64 class indices [%d], BYTES dict reprs [%d] (--return_probabilities/--return_raw_logits) or FP scores [%d, %d], as KServe huggingfaceserver answers", n, n, n, len(k.Labels))
	case config.ModelRuntimeTriton:
		return fmt.Sprintf("want FP scores [%d, %d] or, with classification, BYTES \"value:index[:label]\" [%d, count], as Triton answers", n, len(k.Labels), n)
	case config.ModelRuntimeMLServerHuggingFace:
		return fmt.Sprintf("want BYTES hg_jsonlist [%d, 1], as MLServer's HuggingFace runtime answers", n)
	}
	return fmt.Sprintf("want one FP output of %d valences in [-1, 1] (runtime Custom)", n)
}

// decode reads the answer for n texts.
func (k *KServe) decode(out *inferResponse, n int) ([]Emotion, error) {
	k.init()
	o, err := k.pick(out)
	if err != nil {
		return nil, err
	}
	rt := k.runtime()
	if rt == config.ModelRuntimeCustom {
		return k.decodeValences(o, n)
	}
	if k.byIndexErr != nil {
		return nil, k.byIndexErr
	}
	switch {
	case isInt(o.Datatype) && rt == config.ModelRuntimeKServeHuggingFace:
		return k.decodeIndices(o, n)
	case isFloat(o.Datatype) && (rt == config.ModelRuntimeKServeHuggingFace || rt == config.ModelRuntimeTriton):
		return k.decodeScores(o, n)
	case isBytes(o.Datatype):
		var strs []string
		if err := json.Unmarshal(o.Data, &strs); err != nil {
			return nil, badf("output %q: BYTES data are not strings: %v; %s", o.Name, err, k.expected(n))
		}
		switch rt {
		case config.ModelRuntimeKServeHuggingFace:
			return k.decodeDictReprs(o, strs, n)
		case config.ModelRuntimeTriton:
			return k.decodeClassification(o, strs, n)
		case config.ModelRuntimeMLServerHuggingFace:
			return k.decodeHGJSONList(o, strs, n)
		}
	}
	return nil, badf("output %q is %s %v: %s", o.Name, o.Datatype, o.Shape, k.expected(n))
}

// decodeValences is the Custom contract: N values in [-1, 1]. Only here is
// a bare number read as a valence.
func (k *KServe) decodeValences(o *outputTensor, n int) ([]Emotion, error) {
	if !isFloat(o.Datatype) {
		return nil, badf("output %q datatype %q, want FP32: %s", o.Name, o.Datatype, k.expected(n))
	}
	var vs []float64
	if err := json.Unmarshal(o.Data, &vs); err != nil || len(vs) != n {
		return nil, badf("output %q: want %d numbers, got %s", o.Name, n, truncate(o.Data))
	}
	out := make([]Emotion, n)
	for i, v := range vs {
		if math.IsNaN(v) || v < -1 || v > 1 {
			return nil, badf("output %q[%d] = %v is not a valence in [-1, 1]", o.Name, i, v)
		}
		out[i] = Emotion{Valence: v, Confidence: 1}
	}
	return out, nil
}

func truncate(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// decodeIndices reads KServe's default sequence-classification answer:
// out.argmax().item() per text, an INT64 tensor [N].
func (k *KServe) decodeIndices(o *outputTensor, n int) ([]Emotion, error) {
	var idx []float64 // JSON numbers; checked integral below
	if err := json.Unmarshal(o.Data, &idx); err != nil || len(idx) != n {
		return nil, badf("output %q: want %d class indices, got %s", o.Name, n, truncate(o.Data))
	}
	out := make([]Emotion, n)
	for i, v := range idx {
		c := int(v)
		if float64(c) != v || c < 0 || c >= len(k.Labels) {
			return nil, badf("output %q[%d] = %v is not a class index in [0, %d)", o.Name, i, v, len(k.Labels))
		}
		out[i] = fromTopLabel(k.byIndex[c], k.Labels[c], TopOnlyConfidence)
	}
	return out, nil
}

// distribution turns one row of class scores into probabilities per
// OutputKind: Logits → softmax; Probabilities → must be a distribution;
// empty → a distribution as is, anything else softmaxed.
func (k *KServe) distribution(scores []float64, where string) ([]float64, error) {
	for _, v := range scores {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, badf("%s: score %v is not finite", where, v)
		}
	}
	switch k.OutputKind {
	case config.ModelOutputLogits:
		return softmax(scores), nil
	case config.ModelOutputProbabilities:
		if !isDistribution(scores) {
			return nil, badf("%s: scores %v are not probabilities summing to 1 (outputKind Probabilities); set outputKind Logits if they are logits", where, scores)
		}
	default:
		if !isDistribution(scores) {
			return softmax(scores), nil
		}
	}
	p := slices.Clone(scores)
	var sum float64
	for _, v := range p {
		sum += v
	}
	for i := range p {
		p[i] /= sum
	}
	return p, nil
}

// decodeScores reads FP logits or probabilities [N, K].
func (k *KServe) decodeScores(o *outputTensor, n int) ([]Emotion, error) {
	K := len(k.Labels)
	if len(o.Shape) != 2 || o.Shape[0] != n || o.Shape[1] != K {
		return nil, badf("output %q is %s %v: want scores of shape [%d, %d] (texts × labels); a single number per text is a class index or a valence and is read as neither (a valence server is runtime Custom)", o.Name, o.Datatype, o.Shape, n, K)
	}
	var vs []float64
	if err := json.Unmarshal(o.Data, &vs); err != nil || len(vs) != n*K {
		return nil, badf("output %q: want %d numbers (flattened [%d, %d]), got %s", o.Name, n*K, n, K, truncate(o.Data))
	}
	out := make([]Emotion, n)
	for i := range n {
		p, err := k.distribution(vs[i*K:(i+1)*K], fmt.Sprintf("output %q row %d", o.Name, i))
		if err != nil {
			return nil, err
		}
		out[i] = fromDistribution(p, k.byIndex, k.Labels)
	}
	return out, nil
}

// npScalar matches numpy scalar reprs inside a dict repr
// ("np.float32(-2.15)"), which KServe's e2e test evals with np in scope.
var npScalar = regexp.MustCompile(`np\.[a-z0-9_]+\(([^()]*)\)`)

// parseDictRepr reads str({0: 0.0094, 1: 0.9906}): integer keys 0..K-1.
func parseDictRepr(s string, classes int) ([]float64, error) {
	s = strings.TrimSpace(npScalar.ReplaceAllString(s, "$1"))
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("not a dict repr")
	}
	body := strings.TrimSpace(s[1 : len(s)-1])
	out := make([]float64, classes)
	seen := make([]bool, classes)
	if body == "" {
		return nil, fmt.Errorf("empty dict")
	}
	for part := range strings.SplitSeq(body, ",") {
		key, val, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("entry %q is not key: value", part)
		}
		i, err := strconv.Atoi(strings.TrimSpace(key))
		if err != nil || i < 0 || i >= classes || seen[i] {
			return nil, fmt.Errorf("key %q is not a new class index in [0, %d)", strings.TrimSpace(key), classes)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("value %q is not a number", strings.TrimSpace(val))
		}
		out[i], seen[i] = v, true
	}
	if slices.Contains(seen, false) {
		return nil, fmt.Errorf("want all %d classes", classes)
	}
	return out, nil
}

// decodeDictReprs reads KServe's --return_probabilities (softmax, four
// decimals) or --return_raw_logits answer: one str(dict) per text.
func (k *KServe) decodeDictReprs(o *outputTensor, strs []string, n int) ([]Emotion, error) {
	if len(strs) != n {
		return nil, badf("output %q: want %d dict reprs, got %d", o.Name, n, len(strs))
	}
	out := make([]Emotion, n)
	for i, s := range strs {
		scores, err := parseDictRepr(s, len(k.Labels))
		if err != nil {
			return nil, badf("output %q[%d] = %q: %v; %s", o.Name, i, s, err, k.expected(n))
		}
		p, err := k.distribution(scores, fmt.Sprintf("output %q[%d]", o.Name, i))
		if err != nil {
			return nil, err
		}
		out[i] = fromDistribution(p, k.byIndex, k.Labels)
	}
	return out, nil
}

// labelIndex resolves a label a server sent: the configured label
// (ignoring case), or transformers' default "LABEL_k" name for index k.
// Without Labels (MLServer), any label with an affect.
func (k *KServe) labelAffect(label string) (config.Affect, string, bool) {
	l := strings.ToLower(label)
	if i := slices.Index(k.lowerLabels, l); i >= 0 {
		return k.byIndex[i], k.Labels[i], true
	}
	if rest, ok := strings.CutPrefix(l, "label_"); ok && len(k.Labels) > 0 {
		if i, err := strconv.Atoi(rest); err == nil && i >= 0 && i < len(k.Labels) {
			return k.byIndex[i], k.Labels[i], true
		}
	}
	if len(k.Labels) == 0 {
		a, ok := k.affects[l]
		return a, label, ok
	}
	return config.Affect{}, "", false
}

// decodeClassification reads Triton's classification extension: per text
// `count` strings "value:index[:label]", highest first.
func (k *KServe) decodeClassification(o *outputTensor, strs []string, n int) ([]Emotion, error) {
	if len(strs) == 0 || len(strs)%n != 0 {
		return nil, badf("output %q: %d classification strings for %d texts; %s", o.Name, len(strs), n, k.expected(n))
	}
	K, count := len(k.Labels), len(strs)/n
	out := make([]Emotion, n)
	for i := range n {
		scores := make([]float64, K)
		present := make([]bool, K)
		for j, s := range strs[i*count : (i+1)*count] {
			parts := strings.SplitN(s, ":", 3)
			if len(parts) < 2 {
				return nil, badf("output %q[%d][%d] = %q is not \"value:index[:label]\"; %s", o.Name, i, j, s, k.expected(n))
			}
			v, err1 := strconv.ParseFloat(parts[0], 64)
			c, err2 := strconv.Atoi(parts[1])
			if err1 != nil || err2 != nil || c < 0 || c >= K || present[c] {
				return nil, badf("output %q[%d][%d] = %q is not \"value:index[:label]\" with a new index in [0, %d)", o.Name, i, j, s, K)
			}
			if len(parts) == 3 && !strings.EqualFold(parts[2], k.Labels[c]) {
				return nil, badf("output %q[%d][%d] = %q: the model calls class %d %q, model.labels %q", o.Name, i, j, s, c, parts[2], k.Labels[c])
			}
			scores[c], present[c] = v, true
		}
		where := fmt.Sprintf("output %q text %d", o.Name, i)
		if count == K {
			p, err := k.distribution(scores, where)
			if err != nil {
				return nil, err
			}
			out[i] = fromDistribution(p, k.byIndex, k.Labels)
			continue
		}
		// Top-count only: the classes not returned share what is left of
		// a probability distribution, or get nothing after a softmax of
		// the returned logits.
		var given []float64
		for c := range K {
			if present[c] {
				given = append(given, scores[c])
			}
		}
		p := make([]float64, K)
		if k.OutputKind != config.ModelOutputLogits && isPartialDistribution(given) {
			var sum float64
			for _, v := range given {
				sum += v
			}
			rest := max(0, 1-sum) / float64(K-count)
			for c := range K {
				p[c] = rest
				if present[c] {
					p[c] = scores[c]
				}
			}
		} else {
			sm := softmax(given)
			j := 0
			for c := range K {
				if present[c] {
					p[c] = sm[j]
					j++
				}
			}
		}
		e := fromDistribution(p, k.byIndex, k.Labels)
		if count == 1 {
			e.Confidence = min(e.Confidence, TopOnlyConfidence)
		}
		out[i] = e
	}
	return out, nil
}

func isPartialDistribution(p []float64) bool {
	var sum float64
	for _, v := range p {
		if v < 0 || v > 1 {
			return false
		}
		sum += v
	}
	return sum <= 1.01
}

type hgLabel struct {
	Label *string  `json:"label"`
	Score *float64 `json:"score"`
}

// decodeHGJSONList reads MLServer's hg_jsonlist: per text a JSON object
// {"label", "score"} (the pipeline's top class) or a JSON list of them
// (every class, top_k=None).
func (k *KServe) decodeHGJSONList(o *outputTensor, strs []string, n int) ([]Emotion, error) {
	if ct, ok := o.Parameters["content_type"]; ok && ct != "hg_jsonlist" {
		return nil, badf("output %q content_type %v, want hg_jsonlist; %s", o.Name, ct, k.expected(n))
	}
	if len(strs) != n {
		return nil, badf("output %q: want %d hg_jsonlist elements, got %d", o.Name, n, len(strs))
	}
	out := make([]Emotion, n)
	for i, s := range strs {
		s = strings.TrimSpace(s)
		var items []hgLabel
		single := strings.HasPrefix(s, "{")
		if single {
			var one hgLabel
			if err := json.Unmarshal([]byte(s), &one); err != nil {
				return nil, badf("output %q[%d] = %q is not JSON {\"label\", \"score\"}: %v; %s", o.Name, i, s, err, k.expected(n))
			}
			items = []hgLabel{one}
		} else if err := json.Unmarshal([]byte(s), &items); err != nil || len(items) == 0 {
			return nil, badf("output %q[%d] = %q is not a JSON {\"label\", \"score\"} or a list of them; %s", o.Name, i, s, k.expected(n))
		}
		affects := make([]config.Affect, len(items))
		labels := make([]string, len(items))
		scores := make([]float64, len(items))
		for j, it := range items {
			if it.Label == nil || it.Score == nil {
				return nil, badf("output %q[%d] = %q: want \"label\" and \"score\"", o.Name, i, s)
			}
			a, label, ok := k.labelAffect(*it.Label)
			if !ok {
				return nil, badf("output %q[%d]: label %q has no valence/arousal (model.labels / model.labelMap)", o.Name, i, *it.Label)
			}
			affects[j], labels[j], scores[j] = a, label, *it.Score
		}
		if single {
			sc := scores[0]
			if math.IsNaN(sc) || sc < 0 || sc > 1 {
				return nil, badf("output %q[%d]: score %v is not a probability", o.Name, i, sc)
			}
			out[i] = fromTopLabel(affects[0], labels[0], 2*TopOnlyConfidence*sc)
			continue
		}
		p, err := k.distribution(scores, fmt.Sprintf("output %q[%d]", o.Name, i))
		if err != nil {
			return nil, err
		}
		out[i] = fromDistribution(p, affects, labels)
	}
	return out, nil
}
