package oiptest

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// yelp is the logits KServe's e2e test expects from
// textattack/bert-base-uncased-yelp-polarity for "Hello, my dog is cute."
// (test/e2e/predictor/test_output.py: -2.152204, 2.5094059).
func yelp(string) []float64 { return []float64{-2.152204, 2.5094059} }

// TestAnswersByteForByte pins the bodies to what the sources show.
func TestAnswersByteForByte(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		req  string
		want string
	}{
		{"kserve default", Options{Runtime: KServeHuggingFace, Labels: []string{"negative", "positive"}, Model: yelp},
			`{"id":"r1","inputs":[{"name":"input-0","datatype":"BYTES","shape":[1],"data":["Hello, my dog is cute."]}]}`,
			// test_huggingface.py: res.outputs[0].data == [1]
			`{"id":"r1","model_name":"emotion","model_version":null,"outputs":[{"name":"output-0","shape":[1],"datatype":"INT64","data":[1]}]}`},
		{"kserve return_probabilities", Options{Runtime: KServeHuggingFace, Labels: []string{"negative", "positive"}, Model: yelp, ReturnProbabilities: true},
			`{"id":"r1","inputs":[{"name":"input-0","datatype":"BYTES","shape":[1],"data":["Hello, my dog is cute."]}]}`,
			// test_huggingface.py: ast.literal_eval(data[0]) == {0: 0.0094, 1: 0.9906}
			`{"id":"r1","model_name":"emotion","model_version":null,"outputs":[{"name":"output-0","shape":[1],"datatype":"BYTES","data":["{0: 0.0094, 1: 0.9906}"]}]}`},
		{"kserve return_raw_logits", Options{Runtime: KServeHuggingFace, Labels: []string{"negative", "positive"}, Model: yelp, ReturnRawLogits: true},
			`{"id":"r1","inputs":[{"name":"input-0","datatype":"BYTES","shape":[1],"data":["x"]}]}`,
			`{"id":"r1","model_name":"emotion","model_version":null,"outputs":[{"name":"output-0","shape":[1],"datatype":"BYTES","data":["{0: -2.1522040367126465, 1: 2.5094058513641357}"]}]}`},
		{"triton logits", Options{Runtime: Triton, Labels: []string{"negative", "positive"}, Model: yelp},
			`{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["x"]}],"outputs":[{"name":"logits"}]}`,
			`{"model_name":"emotion","model_version":"1","outputs":[{"name":"logits","datatype":"FP32","shape":[1,2],"data":[-2.1522040367126465,2.5094058513641357]}]}`},
		{"triton classification", Options{Runtime: Triton, Labels: []string{"negative", "positive"}, Model: yelp, TritonLabels: true},
			`{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["x"]}],"outputs":[{"name":"logits","parameters":{"classification":2}}]}`,
			// extension_classification.md: "value:index:label", std::to_string(float)
			`{"model_name":"emotion","model_version":"1","outputs":[{"name":"logits","datatype":"BYTES","shape":[1,2],"data":["2.509406:1:positive","-2.152204:0:negative"]}]}`},
		{"mlserver hg_jsonlist", Options{Runtime: MLServerHuggingFace, Labels: []string{"NEGATIVE", "POSITIVE"}, Model: yelp},
			`{"id":"m1","inputs":[{"name":"args","datatype":"BYTES","shape":[1],"data":["x"]}]}`,
			`{"model_name":"emotion","id":"m1","parameters":{},"outputs":[{"name":"output","shape":[1,1],"datatype":"BYTES","parameters":{"content_type":"hg_jsonlist"},"data":["{\"label\": \"POSITIVE\", \"score\": 0.9906372427940369}"]}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, hs := Start(tc.o)
			defer hs.Close()
			code, body := post(t, hs.URL+"/v2/models/emotion/infer", tc.req)
			if code != 200 || body != tc.want {
				t.Errorf("got %d\n%s\nwant\n%s", code, body, tc.want)
			}
			if s.Requests() != 1 || s.Received()[0].Inputs != 1 {
				t.Errorf("received %+v", s.Received())
			}
		})
	}
}

func TestReadyAndErrors(t *testing.T) {
	for _, c := range []struct {
		rt                 Runtime
		readyCode, notCode int
		notBody            string
	}{
		{KServeHuggingFace, 200, 503, `{"error":"Model with name emotion is not ready."}`},
		{Triton, 200, 400, `{"error":"Model version not ready"}`},
		{MLServerHuggingFace, 200, 400, `null`},
	} {
		s, hs := Start(Options{Runtime: c.rt})
		resp, _ := http.Get(hs.URL + "/v2/models/emotion/ready")
		if resp.StatusCode != c.readyCode {
			t.Errorf("%s ready: %d", c.rt, resp.StatusCode)
		}
		_ = resp.Body.Close()
		s.SetReady(false)
		resp, _ = http.Get(hs.URL + "/v2/models/emotion/ready")
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.notCode || !bytes.Equal(b, []byte(c.notBody)) {
			t.Errorf("%s not ready: %d %s", c.rt, resp.StatusCode, b)
		}
		hs.Close()
	}
	s, hs := Start(Options{Runtime: Triton})
	defer hs.Close()
	if code, body := post(t, hs.URL+"/v2/models/emotion/infer", `{"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["x"]}]}`); code != 400 || !strings.Contains(body, "unexpected inference input 'text'") {
		t.Errorf("wrong input name: %d %s", code, body)
	}
	s.SetFault(Fault500)
	if code, _ := post(t, hs.URL+"/v2/models/emotion/infer", `{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[2,1],"data":["x","y"]}]}`); code != 500 {
		t.Errorf("fault 500: %d", code)
	}
	if r := s.Received(); len(r) != 2 || len(r[1].Texts) != 2 {
		t.Errorf("received %+v", r)
	}
}
