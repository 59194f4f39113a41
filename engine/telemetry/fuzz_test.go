package telemetry

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/strictjson"
)

// FuzzDecodeBatch feeds arbitrary bodies to the decoder and validator: they
// must never panic, and every rejection must be a *Error naming a field.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`[{"user":"u","kind":"text","at":"2026-11-28T09:00:00Z","text":"hi"}]`), false)
	f.Add([]byte(`[{"user":"u","kind":"rr","at":"2026-11-28T09:00:00Z","rr_ms":[800,810]}]`), false)
	f.Add([]byte("{\"user\":\"u\",\"kind\":\"sart\",\"at\":\"2026-11-28T09:00:00Z\",\"trials\":[{\"digit\":3,\"responded\":true,\"rt_ms\":300}]}\n"), true)
	f.Add([]byte(`[{"user":"u","kind":"questionnaire","at":"2026-11-28T09:00:00Z","brs":[1,2,3,4,5,1],"mood":3}]`), false)
	f.Add([]byte(`[{"user":1e999}]`), false)
	f.Add([]byte("\xff\xfe"), true)
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		samples, err := DecodeBatch(bytes.NewReader(body), ndjson)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Field == "" {
				t.Fatalf("decode error without a field: %v", err)
			}
			return
		}
		for i := range samples {
			if err := samples[i].Validate(i, now, []string{"BodyScan"}); err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Field == "" {
					t.Fatalf("validation error without a field: %v", err)
				}
			}
		}
	})
}

// FuzzFastDecodeAgreesWithEncodingJSON: decodeStrict accepts exactly what
// encoding/json behind engine/strictjson's token walk accepts (which
// refuses the duplicate and case-variant keys plain encoding/json takes),
// with the same result. engine/strictjson's FuzzDecodersAgree holds its
// two decoders to the same for every body type.
func FuzzFastDecodeAgreesWithEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`[{"user":"u","kind":"text","at":"2026-11-28T09:00:00Z","text":"hi"}]`,
		`[{"user":"u","kind":"rr","at":"2026-11-28T09:00:00Z","rr_ms":[800,810]}]]`,
		`[{"user":"u","kind":"sart","at":"2026-11-28T09:00:00Z","trials":[{"digit":3.5}]}]`,
		`[{"USER":"u","Kind":"rr","at":"2026-11-28T09:00:00Z","bpm":1e400}]`,
		`[{"user":"u","user":"v","kind":"questionnaire","brs":[1,2,3,4,5,1],"mood":null}] x`,
		`[{"user":"u","extra":1}]`,
		`[{"user":"dup-a","user":"victim-1","kind":"heart_rate","at":"2026-11-28T09:00:00Z","bpm":70}]`,
		`[{"User":"victim-1","KIND":"heart_rate","at":"2026-11-28T09:00:00Z","BPM":70}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, std []Sample
		fastErr := decodeStrict(body, &fast, "samples")
		stdErr := strictjson.Standard(body, &std)
		if (fastErr == nil) != (stdErr == nil) {
			t.Fatalf("decodeStrict err = %v, strictjson.Standard err = %v", fastErr, stdErr)
		}
		if fastErr == nil && !reflect.DeepEqual(fast, std) {
			t.Fatalf("decoded differently:\n fast %+v\n std  %+v", fast, std)
		}
	})
}
