package textemotion

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jonreiter/govader"
)

func TestVaderPassesThroughTheCompoundScore(t *testing.T) {
	v := NewVader()
	reference := govader.NewSentimentIntensityAnalyzer()
	for _, text := range []string{"I feel great and calm today!", "This is awful, I hate everything.", "The meeting is at noon."} {
		got, err := v.Score(context.Background(), text)
		if err != nil {
			t.Fatal(err)
		}
		if want := reference.PolarityScores(text).Compound; got != want {
			t.Errorf("%q: %v, want VADER's compound %v", text, got, want)
		}
	}
	pos, _ := v.Score(context.Background(), "I feel great and calm today!")
	neg, _ := v.Score(context.Background(), "This is awful, I hate everything.")
	if pos <= 0.3 || neg >= -0.3 {
		t.Errorf("positive %v, negative %v: want clearly signed scores", pos, neg)
	}
}

// modelServer speaks the Open Inference Protocol; handler decides the reply.
func modelServer(t *testing.T, handler func(req map[string]any) (int, any)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && (r.URL.Path == "/v2/health/ready" || r.URL.Path == "/v2/models/emotion/ready"):
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPost && r.URL.Path == "/v2/models/emotion/infer":
			var req map[string]any
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			status, body := handler(req)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "no such model"})
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func output(datatype string, values ...any) map[string]any {
	return map[string]any{"model_name": "emotion", "outputs": []any{map[string]any{"name": "valence", "shape": []int{1}, "datatype": datatype, "data": values}}}
}

func TestKServeProtocolContract(t *testing.T) {
	var seen map[string]any
	srv := modelServer(t, func(req map[string]any) (int, any) {
		seen = req
		return http.StatusOK, output("FP32", 0.25)
	})
	k := &KServe{BaseURL: srv.URL, Model: "emotion"}
	if err := k.Ready(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}
	v, err := k.Score(context.Background(), "hello there")
	if err != nil || v != 0.25 {
		t.Fatalf("score = %v, %v; want 0.25", v, err)
	}
	input := seen["inputs"].([]any)[0].(map[string]any)
	if input["datatype"] != "BYTES" || input["data"].([]any)[0] != "hello there" || input["shape"].([]any)[0].(float64) != 1 {
		t.Errorf("request tensor = %v, want one BYTES element holding the text", input)
	}
}

func TestKServeErrors(t *testing.T) {
	cases := []struct {
		name    string
		handler func(map[string]any) (int, any)
		want    error
	}{
		{"server error", func(map[string]any) (int, any) { return 500, map[string]string{"error": "CUDA out of memory"} }, ErrUnavailable},
		{"bad request", func(map[string]any) (int, any) { return 400, map[string]string{"error": "bad input"} }, ErrBadResponse},
		{"two outputs", func(map[string]any) (int, any) {
			o := output("FP32", 0.1)
			o["outputs"] = append(o["outputs"].([]any), o["outputs"].([]any)[0])
			return 200, o
		}, ErrBadResponse},
		{"string datatype", func(map[string]any) (int, any) { return 200, output("BYTES", "happy") }, ErrBadResponse},
		{"out of range", func(map[string]any) (int, any) { return 200, output("FP32", 3.5) }, ErrBadResponse},
		{"not JSON", func(map[string]any) (int, any) { return 200, "<<garbage" }, ErrBadResponse},
		{"timeout", func(map[string]any) (int, any) { time.Sleep(300 * time.Millisecond); return 200, output("FP32", 0.1) }, ErrTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := modelServer(t, tc.handler)
			k := &KServe{BaseURL: srv.URL, Model: "emotion", Timeout: 100 * time.Millisecond}
			_, err := k.Score(context.Background(), "text")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Unreachable server.
	k := &KServe{BaseURL: "http://127.0.0.1:1", Model: "emotion"}
	if _, err := k.Score(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unreachable: err = %v, want ErrUnavailable", err)
	}
}

func TestFallbackToVader(t *testing.T) {
	srv := modelServer(t, func(map[string]any) (int, any) { return 503, map[string]string{"error": "loading"} })
	var reasons []string
	f := &Fallback{Primary: &KServe{BaseURL: srv.URL, Model: "emotion"}, Secondary: NewVader(), OnFallback: func(r string) { reasons = append(reasons, r) }}
	v, err := f.Score(context.Background(), "I love this calm place")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := NewVader().Score(context.Background(), "I love this calm place")
	if v != want || len(reasons) != 1 || reasons[0] != "unavailable" {
		t.Fatalf("score %v (want VADER's %v), reasons %v", v, want, reasons)
	}
}
