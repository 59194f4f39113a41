package strictjson_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/strictjson"
	"github.com/attune-io/attune/engine/telemetry"
)

// consentBody has the shape of the consent endpoints' body.
type consentBody struct {
	Scopes []telemetry.Scope `json:"scopes"`
}

const at = `"at":"2026-11-28T09:00:00Z"`

// hostileBodies are the examples and their kin: each must be
// refused by both decoders, naming the field.
var hostileBodies = []struct {
	name  string
	body  string
	into  func() any
	field string // under the root "samples" for batches, "" otherwise
	msg   string
}{
	{"duplicate user", `[{"user":"dup-a","user":"victim-1","kind":"heart_rate",` + at + `,"bpm":70}]`, batch, "samples[0].user", "duplicate key"},
	{"case-variant duplicate", `[{"user":"dup-a","USER":"victim-1","kind":"heart_rate",` + at + `,"bpm":70}]`, batch, "samples[0].USER", `differs from "user" only in case`},
	{"case-variant names", `[{"User":"victim-1","KIND":"heart_rate",` + at + `,"BPM":70}]`, batch, "samples[0].User", `did you mean "user"`},
	{"escaped duplicate", `[{"user":"a","\u0075ser":"b"}]`, batch, "samples[0].user", "duplicate key"},
	{"Unicode fold of a name", `[{"uſer":"victim-1"}]`, batch, `samples[0]["u\u017fer"]`, `did you mean "user"`},
	{"duplicate scopes", `{"scopes":["behaviour"],"scopes":["physiology"]}`, consent, "scopes", "duplicate key"},
	{"case-variant scopes", `{"Scopes":["behaviour"]}`, consent, "Scopes", `did you mean "scopes"`},
	{"unknown consent key", `{"scopes":["text"],"until":"never"}`, consent, "until", "unknown field"},
	{"unknown key in an event", `[{"user":"u","kind":"behaviour",` + at + `,"events":[{"type":"focus",` + at + `,"target":"x"}]}]`, batch, "samples[0].events[0].target", "unknown field"},
	{"duplicate key in an event", `[{"user":"u","kind":"behaviour",` + at + `,"events":[{"type":"focus","type":"blur",` + at + `}]}]`, batch, "samples[0].events[0].type", "duplicate key"},
	{"NaN", `[{"user":"u","kind":"heart_rate",` + at + `,"bpm":NaN}]`, batch, "samples[0].bpm", "NaN is not a JSON number"},
	{"Infinity", `[{"user":"u","kind":"rr",` + at + `,"rr_ms":[800,Infinity]}]`, batch, "samples[0].rr_ms[1]", "Infinity is not a JSON number"},
	{"-Infinity", `[{"user":"u","kind":"heart_rate",` + at + `,"bpm":-Infinity}]`, batch, "samples[0].bpm", "-Infinity is not a JSON number"},
	{"number out of range", `[{"user":"u","kind":"heart_rate",` + at + `,"bpm":1e400}]`, batch, "samples[0].bpm", "out of range"},
	{"invalid UTF-8 in a text", "[{\"user\":\"u\",\"kind\":\"text\"," + at + ",\"text\":\"caf\xe9\"}]", batch, "samples[0].text", "invalid UTF-8"},
	{"lone surrogate", `[{"user":"u\ud800","kind":"text",` + at + `}]`, batch, "samples[0].user", "lone surrogate"},
	{"bad timestamp", `[{"user":"u","kind":"text","at":"yesterday"}]`, batch, "samples[0].at", "invalid timestamp"},
	{"timestamp with a comma", `[{"user":"u","kind":"text","at":"2026-11-28T09:00:00,5Z"}]`, batch, "samples[0].at", "invalid timestamp"},
	{"bad timestamp in an event", `[{"user":"u","kind":"behaviour",` + at + `,"events":[{"type":"focus","at":"9am"}]}]`, batch, "samples[0].events[0].at", "invalid timestamp"},
	{"wrong type", `[{"user":"u","kind":"heart_rate",` + at + `,"bpm":"70"}]`, batch, "samples[0].bpm", "wrong type"},
	{"fraction for an integer", `[{"user":"u","kind":"questionnaire",` + at + `,"mood":3.5}]`, batch, "samples[0].mood", "not an integer"},
	{"trailing data", `[{"user":"u","kind":"text",` + at + `}] []`, batch, "samples", "unexpected data"},
	{"truncated", `[{"user":"u","kind":"text",`, batch, "samples[0]", "truncated"},
	{"duplicate decision field", `{"available":true,"available":false}`, decision, "available", "duplicate key"},
	{"case-variant decision field", `{"Context":["idle"]}`, decision, "Context", `did you mean "context"`},
}

func batch() any    { return new([]telemetry.Sample) }
func consent() any  { return new(consentBody) }
func decision() any { return new(contract.DecisionRequest) }

func TestHostileBodiesAreRefusedNamingTheField(t *testing.T) {
	for _, tc := range hostileBodies {
		t.Run(tc.name, func(t *testing.T) {
			root := ""
			if strings.HasPrefix(tc.body, "[") {
				root = "samples"
			}
			if err := strictjson.Fast([]byte(tc.body), tc.into()); err == nil {
				t.Errorf("the fast decoder accepts it")
			}
			for name, decode := range map[string]func([]byte, any) error{"Standard": strictjson.Standard, "Decode": strictjson.Decode} {
				err := decode([]byte(tc.body), tc.into())
				var e *strictjson.Error
				if !errors.As(err, &e) {
					t.Fatalf("%s: err = %v, want a *strictjson.Error", name, err)
				}
				if got := e.Field(root); got != tc.field || !strings.Contains(e.Message, tc.msg) {
					t.Errorf("%s: field %q, message %q; want field %q and a message with %q", name, got, e.Message, tc.field, tc.msg)
				}
			}
		})
	}
}

func TestValidBodiesDecodeAlike(t *testing.T) {
	for _, body := range []string{
		`[{"user":"u","kind":"rr",` + at + `,"rr_ms":[812,798.5],"bpm":72}]`,
		`[{"user":"ü","kind":"behaviour",` + at + `,"events":[{"type":"focus",` + at + `}]}]`,
		`[{"user":"u","kind":"questionnaire","at":"2026-11-28T09:00:00.123+01:00","brs":[1,2,3,4,5,1],"mood":null}]`,
		`[]`,
		`null`,
	} {
		var fast, std, both []telemetry.Sample
		if err := strictjson.Fast([]byte(body), &fast); err != nil {
			t.Fatalf("%s: fast: %v", body, err)
		}
		if err := strictjson.Standard([]byte(body), &std); err != nil {
			t.Fatalf("%s: standard: %v", body, err)
		}
		if err := strictjson.Decode([]byte(body), &both); err != nil {
			t.Fatalf("%s: decode: %v", body, err)
		}
		if !reflect.DeepEqual(fast, std) || !reflect.DeepEqual(fast, both) {
			t.Errorf("%s decoded differently:\n fast %+v\n std  %+v", body, fast, std)
		}
	}
}

// FuzzDecodersAgree is the differential fuzz target: for every body and
// each body type the engine decodes, the fast and the standard decoder
// give the same verdict, and when they accept, the same value.
//
//	go test ./engine/strictjson/ -run '^$' -fuzz FuzzDecodersAgree -fuzztime 60s
func FuzzDecodersAgree(f *testing.F) {
	for _, tc := range hostileBodies {
		f.Add([]byte(tc.body))
	}
	for _, seed := range []string{
		`[{"user":"u","kind":"text",` + at + `,"text":"hi","source":"chat"}]`,
		`[{"user":"u","kind":"sart",` + at + `,"trials":[{"digit":3,"responded":true,"rt_ms":300}]}]`,
		`[{"user":"u","kind":"intervention",` + at + `,"intervention":"BodyScan","completed":true,"rating":4,"decision":"d"}]`,
		`{"scopes":["behaviour","physiology","text","research"]}`,
		`{"available":false,"context":["idle","between_tasks"]}`,
		`{"a":{"b":[1,{"c":2,"C":3}]}}`,
		`[{"user":"\u00fc\ud83d\ude00"}]`,
		`[{"user":"u","at":"2026-11-28T09:00:00+24:00"}]`,
		`[{"user":"u","mood":-0,"rating":1E2}]`,
		"[{\"user\":\"u\"}]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, into := range []func() any{batch, consent, decision} {
			fast, std := into(), into()
			fastErr := strictjson.Fast(body, fast)
			stdErr := strictjson.Standard(body, std)
			if (fastErr == nil) != (stdErr == nil) {
				t.Fatalf("%T: fast err = %v, standard err = %v", fast, fastErr, stdErr)
			}
			if fastErr == nil && !reflect.DeepEqual(fast, std) {
				t.Fatalf("%T decoded differently:\n fast %+v\n std  %+v", fast, fast, std)
			}
			if stdErr != nil {
				var e *strictjson.Error
				if !errors.As(stdErr, &e) || e.Message == "" {
					t.Fatalf("standard error %v is not a *strictjson.Error with a message", stdErr)
				}
			}
		}
	})
}
