package textemotion

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/oiptest"
)

// serve starts an oiptest server and a client configured for it.
func serve(t testing.TB, o oiptest.Options, m config.Model) (*oiptest.Server, *KServe) {
	t.Helper()
	s, hs := oiptest.Start(o)
	t.Cleanup(hs.Close)
	m.URL, m.Name = hs.URL, "emotion"
	if m.Timeout.Duration == 0 {
		m.Timeout.Duration = 2 * time.Second
	}
	return s, NewKServe(m, hs.Client())
}

var probeTexts = []string{"I am so happy and calm today", "I am terrified of tomorrow", "The meeting is at noon"}

type runtimeCase struct {
	name  string
	opts  oiptest.Options
	model config.Model
	// topOnly: the answer carries the top class only.
	topOnly bool
}

func runtimeCases() []runtimeCase {
	ekman := oiptest.EkmanLabels
	return []runtimeCase{
		{"kserve-hf indices", oiptest.Options{Runtime: oiptest.KServeHuggingFace}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: ekman}, true},
		{"kserve-hf return_probabilities", oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: ekman}, false},
		{"kserve-hf return_probabilities declared", oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: ekman, OutputKind: config.ModelOutputProbabilities}, false},
		{"kserve-hf return_raw_logits", oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnRawLogits: true}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: ekman, OutputKind: config.ModelOutputLogits}, false},
		{"triton logits", oiptest.Options{Runtime: oiptest.Triton}, config.Model{Runtime: config.ModelRuntimeTriton, Labels: ekman}, false},
		{"triton probabilities", oiptest.Options{Runtime: oiptest.Triton, TritonProbabilities: true}, config.Model{Runtime: config.ModelRuntimeTriton, Labels: ekman, OutputKind: config.ModelOutputProbabilities}, false},
		{"triton classification with labels", oiptest.Options{Runtime: oiptest.Triton, TritonLabels: true}, config.Model{Runtime: config.ModelRuntimeTriton, Labels: ekman, Classification: true, OutputKind: config.ModelOutputLogits}, false},
		{"triton classification indices", oiptest.Options{Runtime: oiptest.Triton, TritonProbabilities: true}, config.Model{Runtime: config.ModelRuntimeTriton, Labels: ekman, Classification: true}, false},
		{"mlserver-hf top class", oiptest.Options{Runtime: oiptest.MLServerHuggingFace}, config.Model{Runtime: config.ModelRuntimeMLServerHuggingFace}, true},
		{"mlserver-hf all scores", oiptest.Options{Runtime: oiptest.MLServerHuggingFace, MLServerAllScores: true}, config.Model{Runtime: config.ModelRuntimeMLServerHuggingFace, Labels: ekman}, false},
		{"kserve-hf sentiment", oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true, Labels: oiptest.SentimentLabels}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.SentimentLabels}, false},
	}
}

func TestEveryRuntimeAndOutputFormDecodes(t *testing.T) {
	for _, tc := range runtimeCases() {
		t.Run(tc.name, func(t *testing.T) {
			srv, k := serve(t, tc.opts, tc.model)
			got, err := k.ScoreBatch(context.Background(), probeTexts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || srv.Requests() != 1 {
				t.Fatalf("%d emotions from %d requests, want 3 from 1", len(got), srv.Requests())
			}
			happy, scared, plain := got[0], got[1], got[2]
			wantHappy, wantScared := "joy", "fear"
			if len(tc.opts.Labels) > 0 {
				wantHappy, wantScared = "positive", "neutral" // no sentiment keyword for "terrified"
			}
			if happy.Label != wantHappy || scared.Label != wantScared || plain.Label != "neutral" {
				t.Errorf("labels %q %q %q, want %s, %s, neutral", happy.Label, scared.Label, plain.Label, wantHappy, wantScared)
			}
			if happy.Valence < 0.5 || !happy.HasArousal {
				t.Errorf("happy text: %+v, want clearly positive valence with arousal", happy)
			}
			if len(tc.opts.Labels) == 0 && scared.Valence > -0.5 {
				t.Errorf("scared text: valence %v, want clearly negative", scared.Valence)
			}
			for i, e := range got {
				if e.Confidence < 0 || e.Confidence > 1 || math.IsNaN(e.Valence) || e.Valence < -1 || e.Valence > 1 {
					t.Errorf("text %d: %+v out of range", i, e)
				}
				if tc.topOnly && e.Confidence > 2*TopOnlyConfidence {
					t.Errorf("text %d: top-only answer with confidence %v, want <= %v", i, e.Confidence, 2*TopOnlyConfidence)
				}
			}
			if !tc.topOnly && happy.Confidence <= 0.5 {
				t.Errorf("a sharp distribution: confidence %v, want > 0.5", happy.Confidence)
			}
			// The request the runtime expects.
			rec := srv.Received()[0]
			if rec.Inputs != 1 || len(rec.Texts) != 3 || rec.Texts[1] != probeTexts[1] {
				t.Errorf("received %+v, want one input of the 3 texts", rec)
			}
			if tc.model.Classification && rec.Classification != len(oiptest.EkmanLabels) {
				t.Errorf("classification asked for %d classes, want %d", rec.Classification, len(oiptest.EkmanLabels))
			}
		})
	}
}

func TestCustomRuntimeReadsValences(t *testing.T) {
	_, k := serve(t, oiptest.Options{Runtime: oiptest.Custom}, config.Model{})
	got, err := k.ScoreBatch(context.Background(), probeTexts)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Valence < 0.9 || got[1].Valence > -0.9 || math.Abs(got[2].Valence) > 0.3 || got[0].HasArousal {
		t.Errorf("custom valences %+v", got)
	}
	v, err := k.Score(context.Background(), "so happy")
	if err != nil || v < 0.8 {
		t.Errorf("Score = %v, %v", v, err)
	}
}

// TestWrongFormsAreBadResponses: every runtime rejects answers it does not
// send, naming what it expected.
func TestWrongFormsAreBadResponses(t *testing.T) {
	faults := []oiptest.Fault{oiptest.FaultWrongDatatype, oiptest.FaultWrongCount, oiptest.FaultMalformed, oiptest.FaultClassIndexFP32}
	for _, tc := range runtimeCases() {
		for _, f := range faults {
			t.Run(tc.name+"/"+string(f), func(t *testing.T) {
				srv, k := serve(t, tc.opts, tc.model)
				srv.SetFault(f)
				_, err := k.ScoreBatch(context.Background(), probeTexts)
				if !errors.Is(err, ErrBadResponse) || Reason(err) != "bad_response" {
					t.Fatalf("err = %v, want bad_response", err)
				}
				if f != oiptest.FaultMalformed && !strings.Contains(err.Error(), "want") {
					t.Errorf("message %q does not say what was expected", err)
				}
			})
		}
	}
	// Custom: a label where a valence belongs, and an out-of-range valence.
	srv, k := serve(t, oiptest.Options{Runtime: oiptest.Custom}, config.Model{})
	srv.SetFault(oiptest.FaultWrongDatatype)
	if _, err := k.ScoreBatch(context.Background(), probeTexts); !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "want") {
		t.Errorf("custom BYTES answer: %v", err)
	}
}

// TestClassIndexIsNotValence: the top class index sent as FP32 (1.0 for
// "disgust") must not be read as valence 1.0 by any classifier runtime.
func TestClassIndexIsNotValence(t *testing.T) {
	for _, rt := range []struct {
		srv oiptest.Runtime
		cfg string
	}{{oiptest.KServeHuggingFace, config.ModelRuntimeKServeHuggingFace}, {oiptest.Triton, config.ModelRuntimeTriton}, {oiptest.MLServerHuggingFace, config.ModelRuntimeMLServerHuggingFace}} {
		srv, k := serve(t, oiptest.Options{Runtime: rt.srv}, config.Model{Runtime: rt.cfg, Labels: oiptest.EkmanLabels})
		srv.SetFault(oiptest.FaultClassIndexFP32)
		out, err := k.ScoreBatch(context.Background(), []string{"this is disgusting"})
		if !errors.Is(err, ErrBadResponse) {
			t.Errorf("%s: FP32 class index read as %+v, %v; want bad_response", rt.cfg, out, err)
		}
	}
}

func TestOneRequestForABatchOf100(t *testing.T) {
	srv, k := serve(t, oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels})
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("text %d: happy", i)
	}
	got, err := k.ScoreBatch(context.Background(), texts)
	if err != nil || len(got) != 100 {
		t.Fatalf("%d, %v", len(got), err)
	}
	rec := srv.Received()
	if len(rec) != 1 || len(rec[0].Texts) != 100 || rec[0].Texts[99] != texts[99] {
		t.Fatalf("%d requests (first with %d texts), want 1 with 100", len(rec), len(rec[0].Texts))
	}
}

func TestTimeouts(t *testing.T) {
	_, k := serve(t, oiptest.Options{Runtime: oiptest.Triton, Latency: 300 * time.Millisecond}, config.Model{Runtime: config.ModelRuntimeTriton, Labels: oiptest.EkmanLabels, Timeout: config.Duration{Duration: 50 * time.Millisecond}})
	start := time.Now()
	if _, err := k.ScoreBatch(context.Background(), probeTexts); !errors.Is(err, ErrTimeout) {
		t.Fatalf("slow server: %v, want timeout", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("gave up after %v, want about the 50ms deadline", d)
	}
	srv, k := serve(t, oiptest.Options{Runtime: oiptest.KServeHuggingFace}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels, Timeout: config.Duration{Duration: 50 * time.Millisecond}})
	srv.SetFault(oiptest.FaultHang)
	if _, err := k.ScoreBatch(context.Background(), probeTexts); Reason(err) != "timeout" {
		t.Fatalf("hanging server: %v, want timeout", err)
	}
}

func TestServerErrors(t *testing.T) {
	for _, f := range []oiptest.Fault{oiptest.Fault500, oiptest.Fault503} {
		srv, k := serve(t, oiptest.Options{Runtime: oiptest.KServeHuggingFace}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels})
		srv.SetFault(f)
		if _, err := k.ScoreBatch(context.Background(), probeTexts); Reason(err) != "unavailable" {
			t.Errorf("%s: %v, want unavailable", f, err)
		}
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestBreakerOpensAndRecovers(t *testing.T) {
	srv, k := serve(t, oiptest.Options{Runtime: oiptest.KServeHuggingFace}, config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels})
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var states []string
	b := &Breaker{Threshold: 3, Cooldown: 10 * time.Second, Now: clock.Now, OnChange: func(s string) { states = append(states, s) }}
	reasons := map[string]int{}
	f := &Fallback{Primary: k, Secondary: NewVader(), Breaker: b, OnFallback: func(r string) { reasons[r]++ }}
	ctx := context.Background()
	srv.SetFault(oiptest.Fault500)
	for range 3 {
		if _, err := f.ScoreBatch(ctx, probeTexts); err != nil {
			t.Fatal(err) // VADER answers
		}
	}
	if srv.Requests() != 3 || b.State() != BreakerOpen {
		t.Fatalf("%d requests, breaker %s; want 3 and open", srv.Requests(), b.State())
	}
	for range 5 {
		out, err := f.ScoreBatch(ctx, probeTexts)
		if err != nil || len(out) != 3 {
			t.Fatal(err)
		}
	}
	if srv.Requests() != 3 || reasons["circuit_open"] != 5 || reasons["unavailable"] != 3 {
		t.Fatalf("open breaker: %d requests, reasons %v; want no new request and 5 circuit_open", srv.Requests(), reasons)
	}
	if st := f.TextModelStatus(ctx); st.State != TextModelFallback || st.Reason != "circuit_open" {
		t.Errorf("status while open: %+v", st)
	}
	// Half-open: one probe; it fails, the breaker reopens for twice as long.
	clock.Advance(10 * time.Second)
	_, _ = f.ScoreBatch(ctx, probeTexts)
	if srv.Requests() != 4 || b.State() != BreakerOpen {
		t.Fatalf("failed probe: %d requests, %s", srv.Requests(), b.State())
	}
	clock.Advance(10 * time.Second)
	_, _ = f.ScoreBatch(ctx, probeTexts)
	if srv.Requests() != 4 {
		t.Fatalf("backoff did not double: %d requests", srv.Requests())
	}
	// The server recovers; the next probe closes the breaker.
	srv.SetFault(oiptest.FaultNone)
	clock.Advance(10 * time.Second)
	out, err := f.ScoreBatch(ctx, probeTexts)
	if err != nil || out[0].Label != "joy" || srv.Requests() != 5 || b.State() != BreakerClosed {
		t.Fatalf("recovery: %+v %v, %d requests, %s", out, err, srv.Requests(), b.State())
	}
	want := []string{BreakerOpen, BreakerHalfOpen, BreakerOpen, BreakerHalfOpen, BreakerClosed}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("states %v, want %v", states, want)
	}
}

func TestHalfOpenLetsOneProbeThrough(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	b := &Breaker{Threshold: 1, Cooldown: time.Second, Now: clock.Now}
	b.Failure()
	if b.Allow() {
		t.Fatal("open breaker allowed a call")
	}
	clock.Advance(time.Second)
	if !b.Allow() || b.Allow() {
		t.Fatal("half-open: want exactly one probe")
	}
	b.Success()
	for range 2 {
		if !b.Allow() {
			t.Fatal("closed breaker refused calls")
		}
	}
}

func TestReadiness(t *testing.T) {
	for _, rt := range []struct {
		srv oiptest.Runtime
		cfg string
	}{{oiptest.KServeHuggingFace, config.ModelRuntimeKServeHuggingFace}, {oiptest.Triton, config.ModelRuntimeTriton}, {oiptest.MLServerHuggingFace, config.ModelRuntimeMLServerHuggingFace}, {oiptest.Custom, ""}} {
		m := config.Model{Runtime: rt.cfg}
		if rt.cfg != "" && rt.cfg != config.ModelRuntimeMLServerHuggingFace {
			m.Labels = oiptest.EkmanLabels
		}
		srv, k := serve(t, oiptest.Options{Runtime: rt.srv}, m)
		f := &Fallback{Primary: k, Secondary: NewVader()}
		if st := f.TextModelStatus(context.Background()); st.State != TextModelReady {
			t.Errorf("%s ready: %+v", rt.srv, st)
		}
		srv.SetReady(false)
		if st := f.TextModelStatus(context.Background()); st.State != TextModelFallback || st.Reason != "unavailable" {
			t.Errorf("%s unready: %+v", rt.srv, st)
		}
		if err := k.Ready(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s Ready: %v", rt.srv, err)
		}
	}
	f := &Fallback{Primary: &KServe{BaseURL: "http://127.0.0.1:1", Model: "emotion"}, Secondary: NewVader()}
	if st := f.TextModelStatus(context.Background()); st.State != TextModelFallback {
		t.Errorf("unreachable: %+v", st)
	}
}

func TestDefaultAffects(t *testing.T) {
	d := DefaultAffects()
	if len(d) != len(config.DefaultAffectLabels) {
		t.Fatalf("%d default affects for %d labels", len(d), len(config.DefaultAffectLabels))
	}
	for _, l := range config.DefaultAffectLabels {
		a, ok := d[l]
		if !ok || a.Valence < -1 || a.Valence > 1 || a.Arousal < -1 || a.Arousal > 1 {
			t.Errorf("%s: %+v %v", l, a, ok)
		}
	}
	// Spot-check the rescaling of the lexicon's entries.
	if math.Abs(d["joy"].Valence-0.96) > 1e-9 || math.Abs(d["sadness"].Arousal-(-0.424)) > 1e-9 || d["anger"].Valence >= d["neutral"].Valence {
		t.Errorf("joy %+v, sadness %+v", d["joy"], d["sadness"])
	}
}

func TestLabelMapOverrides(t *testing.T) {
	_, k := serve(t, oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true, Labels: []string{"Calm", "Tense"}, Model: func(string) []float64 { return []float64{10, 0} }},
		config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: []string{"Calm", "Tense"}, LabelMap: map[string]config.Affect{"calm": {Valence: 0.6, Arousal: -0.7}, "tense": {Valence: -0.5, Arousal: 0.8}}})
	got, err := k.ScoreBatch(context.Background(), []string{"x"})
	if err != nil || math.Abs(got[0].Valence-0.6) > 0.01 || got[0].Label != "Calm" {
		t.Fatalf("%+v %v", got, err)
	}
}

// TestModelValidation: config names the offending field.
func TestModelValidation(t *testing.T) {
	base := func(m *config.Model) *config.Config {
		return &config.Config{
			Program: "p/q", Target: config.Vector{Attention: 0.5, Emotion: 0.5, Resilience: 0.5}, Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []string{"BodyScan"}, Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
			Privacy:   config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: 2},
			TokenFile: "t", ReadOnlyTokenFile: "r", PseudonymizationKeyFile: "k", DataDir: "d", ListenAddress: ":1", Model: m,
		}
	}
	ok := []config.Model{
		{URL: "u", Name: "n"},
		{URL: "u", Name: "n", Runtime: config.ModelRuntimeCustom},
		{URL: "u", Name: "n", Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels},
		{URL: "u", Name: "n", Runtime: config.ModelRuntimeTriton, Labels: []string{"NEGATIVE", "Positive"}, Classification: true, OutputKind: config.ModelOutputLogits},
		{URL: "u", Name: "n", Runtime: config.ModelRuntimeMLServerHuggingFace},
		{URL: "u", Name: "n", Runtime: config.ModelRuntimeKServeHuggingFace, Labels: []string{"calm", "joy"}, LabelMap: map[string]config.Affect{"calm": {Valence: 0.5, Arousal: -0.5}}},
	}
	for i, m := range ok {
		if err := base(&m).Validate(); err != nil {
			t.Errorf("valid model %d: %v", i, err)
		}
	}
	bad := map[string]config.Model{
		"model.runtime":              {URL: "u", Name: "n", Runtime: "TorchServe"},
		"model.labels":               {URL: "u", Name: "n", Runtime: config.ModelRuntimeKServeHuggingFace},
		"model.labels[1]":            {URL: "u", Name: "n", Runtime: config.ModelRuntimeTriton, Labels: []string{"joy", "bored"}},
		"model.outputKind":           {URL: "u", Name: "n", Runtime: config.ModelRuntimeTriton, Labels: oiptest.EkmanLabels, OutputKind: "Softmax"},
		"model.classification":       {URL: "u", Name: "n", Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels, Classification: true},
		"model.labelMap[x].valence":  {URL: "u", Name: "n", Runtime: config.ModelRuntimeMLServerHuggingFace, LabelMap: map[string]config.Affect{"x": {Valence: 2}}},
		"model.url":                  {Name: "n"},
		"model.timeout":              {URL: "u", Name: "n", Timeout: config.Duration{Duration: -time.Second}},
		"model.labels[2]":            {URL: "u", Name: "n", Runtime: config.ModelRuntimeTriton, Labels: []string{"joy", "fear", "Joy"}},
		"model.runtime (custom map)": {URL: "u", Name: "n", Labels: []string{"joy", "fear"}},
	}
	for field, m := range bad {
		err := base(&m).Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != strings.Fields(field)[0] {
			t.Errorf("%s: err %v, want a FieldError naming it", field, err)
		}
	}
}

// BenchmarkScoreBatch100 and BenchmarkScoreOneAtATime100 score the same 100
// texts through the test server (loopback HTTP, 1ms model latency): in one
// request, and in 100.
func benchTexts() []string {
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("message %d: that was a good session, feeling calmer and happy now", i)
	}
	return texts
}

func benchClient(b *testing.B) (*oiptest.Server, *KServe) {
	return serve(b, oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true, Latency: time.Millisecond},
		config.Model{Runtime: config.ModelRuntimeKServeHuggingFace, Labels: oiptest.EkmanLabels})
}

func BenchmarkScoreBatch100(b *testing.B) {
	srv, k := benchClient(b)
	texts := benchTexts()
	ctx := context.Background()
	for b.Loop() {
		if _, err := k.ScoreBatch(ctx, texts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(srv.Requests())/float64(b.N), "requests/op")
}

func BenchmarkScoreOneAtATime100(b *testing.B) {
	srv, k := benchClient(b)
	texts := benchTexts()
	ctx := context.Background()
	for b.Loop() {
		for _, t := range texts {
			if _, err := k.ScoreBatch(ctx, []string{t}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(srv.Requests())/float64(b.N), "requests/op")
}
