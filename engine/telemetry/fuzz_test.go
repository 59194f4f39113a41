package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"
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

// FuzzFastDecodeAgreesWithEncodingJSON: the go-json fast path may only
// accept what encoding/json's strict decode accepts, with the same result.
func FuzzFastDecodeAgreesWithEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`[{"user":"u","kind":"text","at":"2026-11-28T09:00:00Z","text":"hi"}]`,
		`[{"user":"u","kind":"rr","at":"2026-11-28T09:00:00Z","rr_ms":[800,810]}]]`,
		`[{"user":"u","kind":"sart","at":"2026-11-28T09:00:00Z","trials":[{"digit":3.5}]}]`,
		`[{"USER":"u","Kind":"rr","at":"2026-11-28T09:00:00Z","bpm":1e400}]`,
		`[{"user":"u","user":"v","kind":"questionnaire","brs":[1,2,3,4,5,1],"mood":null}] x`,
		`[{"user":"u","extra":1}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, std []Sample
		fastErr := decodeStrict(body, &fast, "samples")
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		stdErr := dec.Decode(&std)
		if stdErr == nil {
			if _, err := dec.Token(); err != io.EOF {
				stdErr = errors.New("trailing data")
			}
		}
		if !utf8.Valid(body) {
			stdErr = errors.New("invalid UTF-8")
		}
		if (fastErr == nil) != (stdErr == nil) {
			t.Fatalf("decodeStrict err = %v, encoding/json err = %v", fastErr, stdErr)
		}
		if fastErr == nil && !reflect.DeepEqual(fast, std) {
			t.Fatalf("decoded differently:\n fast %+v\n std  %+v", fast, std)
		}
	})
}
