// Package telemetry defines the samples virtual-world clients send to an
// engine and decodes and validates them strictly: a batch is accepted whole
// or rejected with an error naming the offending field.
package telemetry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/attune-io/attune/engine/strictjson"
)

// Limits on what one request may carry.
const (
	MaxBatchSamples   = 1000
	MaxTextRunes      = 2000
	MaxUserIDBytes    = 128
	MaxRRPerSample    = 600
	MaxEventsSample   = 500
	MaxTrialsSample   = 500
	MaxFutureSkew     = 5 * time.Minute
	MinRRms, MaxRRms  = 1.0, 5000.0
	MinBPM, MaxBPM    = 20.0, 250.0
	MaxReactionTimeMS = 5000.0
)

// Kind is a sample's kind.
type Kind string

const (
	KindBehaviour     Kind = "behaviour"
	KindRR            Kind = "rr"
	KindHeartRate     Kind = "heart_rate"
	KindText          Kind = "text"
	KindQuestionnaire Kind = "questionnaire"
	KindSART          Kind = "sart"
	KindIntervention  Kind = "intervention"
)

// Kinds lists every kind, for metrics and errors.
var Kinds = []Kind{KindBehaviour, KindRR, KindHeartRate, KindText, KindQuestionnaire, KindSART, KindIntervention}

// Scope is a consent scope.
type Scope string

const (
	ScopeBehaviour  Scope = "behaviour"
	ScopePhysiology Scope = "physiology"
	ScopeText       Scope = "text"
	// ScopeQuestionnaire covers the self-reports (mood, the Brief
	// Resilience Scale): health questionnaires, consented apart from
	// behaviour.
	ScopeQuestionnaire Scope = "questionnaire"
	// ScopeResearch lets the program export the user's pseudonymous
	// decision log (GET /v1/decisions) for analysis of whether its
	// interventions help. No telemetry needs it.
	ScopeResearch Scope = "research"
)

// Scopes lists every consent scope.
var Scopes = []Scope{ScopeBehaviour, ScopePhysiology, ScopeText, ScopeQuestionnaire, ScopeResearch}

// Scope returns the consent scope a kind of sample needs. SART results and
// intervention outcomes are what the user does in the world, so they fall
// under behaviour; questionnaires are health self-reports, with a scope
// of their own.
func (k Kind) Scope() Scope {
	switch k {
	case KindRR, KindHeartRate:
		return ScopePhysiology
	case KindText:
		return ScopeText
	case KindQuestionnaire:
		return ScopeQuestionnaire
	default:
		return ScopeBehaviour
	}
}

// IsPhysiological reports whether the kind is biometric data.
func (k Kind) IsPhysiological() bool { return k.Scope() == ScopePhysiology }

// Event is one behaviour event.
type Event struct {
	Type string    `json:"type"`
	At   time.Time `json:"at"`
}

// EventTypes are the behaviour events the engine understands.
var EventTypes = []string{"focus", "blur", "click", "swipe", "message", "task_switch"}

// Trial is one SART trial.
type Trial struct {
	Digit     int     `json:"digit"`
	Responded bool    `json:"responded"`
	RTms      float64 `json:"rt_ms"`
}

// Sample is one piece of telemetry about one user. Which fields are allowed
// depends on Kind.
type Sample struct {
	User string    `json:"user"`
	Kind Kind      `json:"kind"`
	At   time.Time `json:"at"`

	Events       []Event   `json:"events,omitempty"`       // behaviour
	RRms         []float64 `json:"rr_ms,omitempty"`        // rr
	BPM          *float64  `json:"bpm,omitempty"`          // heart_rate (and optionally rr)
	Text         string    `json:"text,omitempty"`         // text
	Source       string    `json:"source,omitempty"`       // text: chat or speech
	BRS          []int     `json:"brs,omitempty"`          // questionnaire
	Mood         *int      `json:"mood,omitempty"`         // questionnaire: 1–5
	Trials       []Trial   `json:"trials,omitempty"`       // sart
	Intervention string    `json:"intervention,omitempty"` // intervention
	Completed    *bool     `json:"completed,omitempty"`    // intervention
	Rating       *int      `json:"rating,omitempty"`       // intervention: 1–5
	Decision     string    `json:"decision,omitempty"`     // intervention: the decision it answers
}

// Error is a rejected input, naming the field.
type Error struct {
	Field   string
	Message string
	// TooLarge marks a body over the size limit (HTTP 413).
	TooLarge bool
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Field: field, Message: fmt.Sprintf(format, args...)}
}

// DecodeBatch reads a JSON array of samples, or NDJSON (one sample per line)
// when ndjson is true. Unknown fields, duplicate or case-variant keys, wrong
// types and trailing data are errors naming the field (engine/strictjson);
// a batch over MaxBatchSamples is too large (413).
func DecodeBatch(r io.Reader, ndjson bool) ([]Sample, error) {
	var samples []Sample
	if ndjson {
		scanner := bufio.NewScanner(r)
		scanner.Buffer(make([]byte, 64*1024), 1<<20)
		for scanner.Scan() {
			text := bytes.TrimSpace(scanner.Bytes())
			if len(text) == 0 {
				continue
			}
			if len(samples) == MaxBatchSamples {
				return nil, tooManySamples()
			}
			var s Sample
			if err := decodeStrict(text, &s, fmt.Sprintf("samples[%d]", len(samples))); err != nil {
				return nil, err
			}
			samples = append(samples, s)
		}
		if err := scanner.Err(); err != nil {
			return nil, bodyErr(err)
		}
	} else {
		body, err := io.ReadAll(r)
		if err != nil {
			return nil, bodyErr(err)
		}
		if err := decodeStrict(body, &samples, "samples"); err != nil {
			return nil, err
		}
		if len(samples) > MaxBatchSamples {
			return nil, tooManySamples()
		}
	}
	if len(samples) == 0 {
		return nil, fieldErr("samples", "the batch is empty")
	}
	return samples, nil
}

func tooManySamples() *Error {
	return &Error{Field: "samples", Message: fmt.Sprintf("more than %d samples in one batch", MaxBatchSamples), TooLarge: true}
}

func bodyErr(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return &Error{Field: "body", Message: fmt.Sprintf("request body larger than %d bytes", tooLarge.Limit), TooLarge: true}
	}
	if errors.Is(err, bufio.ErrTooLong) {
		return fieldErr("samples", "an NDJSON line exceeds 1 MiB")
	}
	return fieldErr("body", "read: %v", err)
}

// decodeStrict decodes one JSON value with engine/strictjson and names the
// field under path in its error.
func decodeStrict(data []byte, v any, path string) error {
	err := strictjson.Decode(data, v)
	if e, ok := errors.AsType[*strictjson.Error](err); ok {
		return fieldErr(e.Field(path), "%s", e.Message)
	}
	return err
}

// Validate checks one sample at index i against its kind's rules, with now
// as the clock for timestamps and known the enabled interventions.
func (s *Sample) Validate(i int, now time.Time, knownInterventions []string) error {
	path := "samples[" + strconv.Itoa(i) + "]"
	if err := ValidUserID(s.User); err != nil {
		if e, ok := errors.AsType[*Error](err); ok {
			return fieldErr(path+"."+e.Field, "%s", e.Message)
		}
		return err
	}
	if !slices.Contains(Kinds, s.Kind) {
		return fieldErr(path+".kind", "unknown kind %q; want one of %v", s.Kind, Kinds)
	}
	if err := checkTime(path+".at", s.At, now); err != nil {
		return err
	}
	allowed := allowedFields[s.Kind]
	for _, f := range kindFields {
		if f.set(s) && !slices.Contains(allowed, f.name) {
			return fieldErr(path+"."+f.name, "not allowed for kind %q", s.Kind)
		}
	}
	switch s.Kind {
	case KindBehaviour:
		return s.validateEvents(path, now)
	case KindRR:
		return s.validateRR(path)
	case KindHeartRate:
		if s.BPM == nil {
			return fieldErr(path+".bpm", "is required for kind heart_rate")
		}
		return checkRange(path+".bpm", *s.BPM, MinBPM, MaxBPM)
	case KindText:
		return s.validateText(path)
	case KindQuestionnaire:
		return s.validateQuestionnaire(path)
	case KindSART:
		return s.validateTrials(path)
	case KindIntervention:
		return s.validateIntervention(path, knownInterventions)
	}
	return nil
}

// allowedFields are the kind-specific fields each kind may set.
var allowedFields = map[Kind][]string{
	KindBehaviour:     {"events"},
	KindRR:            {"rr_ms", "bpm"},
	KindHeartRate:     {"bpm"},
	KindText:          {"text", "source"},
	KindQuestionnaire: {"brs", "mood"},
	KindSART:          {"trials"},
	KindIntervention:  {"intervention", "completed", "rating", "decision"},
}

// kindFields are the kind-specific fields, in the order they are checked.
var kindFields = []struct {
	name string
	set  func(*Sample) bool
}{
	{"events", func(s *Sample) bool { return s.Events != nil }},
	{"rr_ms", func(s *Sample) bool { return s.RRms != nil }},
	{"bpm", func(s *Sample) bool { return s.BPM != nil }},
	{"text", func(s *Sample) bool { return s.Text != "" }},
	{"source", func(s *Sample) bool { return s.Source != "" }},
	{"brs", func(s *Sample) bool { return s.BRS != nil }},
	{"mood", func(s *Sample) bool { return s.Mood != nil }},
	{"trials", func(s *Sample) bool { return s.Trials != nil }},
	{"intervention", func(s *Sample) bool { return s.Intervention != "" }},
	{"completed", func(s *Sample) bool { return s.Completed != nil }},
	{"rating", func(s *Sample) bool { return s.Rating != nil }},
	{"decision", func(s *Sample) bool { return s.Decision != "" }},
}

func checkTime(field string, at, now time.Time) error {
	if plausibleTime(at, now) {
		return nil
	}
	if at.IsZero() {
		return fieldErr(field, "is required (RFC 3339 timestamp)")
	}
	if at.After(now.Add(MaxFutureSkew)) {
		return fieldErr(field, "is in the future (%s)", at.Format(time.RFC3339))
	}
	return fieldErr(field, "is implausibly old (%s)", at.Format(time.RFC3339))
}

// plausibleTime is checkTime without naming the field, for loops over many
// timestamps: the name is built only for an error.
func plausibleTime(at, now time.Time) bool {
	return !at.IsZero() && !at.After(now.Add(MaxFutureSkew)) && at.Year() >= 2000
}

func checkRange(field string, v, lo, hi float64) error {
	if inRange(v, lo, hi) {
		return nil
	}
	return rangeErr(field, v, lo, hi)
}

// inRange is checkRange without naming the field, for loops over many
// values: the name is built only for an error.
func inRange(v, lo, hi float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= lo && v <= hi
}

func rangeErr(field string, v, lo, hi float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fieldErr(field, "must be a finite number")
	}
	return fieldErr(field, "%v is outside [%v, %v]", v, lo, hi)
}

func (s *Sample) validateEvents(path string, now time.Time) error {
	if len(s.Events) == 0 {
		return fieldErr(path+".events", "is required for kind behaviour")
	}
	if len(s.Events) > MaxEventsSample {
		return fieldErr(path+".events", "more than %d events", MaxEventsSample)
	}
	for j, e := range s.Events {
		f := func(field string) string { return path + ".events[" + strconv.Itoa(j) + "]." + field }
		if !slices.Contains(EventTypes, e.Type) {
			return fieldErr(f("type"), "unknown event %q; want one of %v", e.Type, EventTypes)
		}
		if !plausibleTime(e.At, now) {
			return checkTime(f("at"), e.At, now)
		}
		if j > 0 && e.At.Before(s.Events[j-1].At) {
			return fieldErr(f("at"), "events must be in time order")
		}
	}
	return nil
}

func (s *Sample) validateRR(path string) error {
	if len(s.RRms) == 0 {
		return fieldErr(path+".rr_ms", "is required for kind rr")
	}
	if len(s.RRms) > MaxRRPerSample {
		return fieldErr(path+".rr_ms", "more than %d intervals", MaxRRPerSample)
	}
	for j, v := range s.RRms {
		if !inRange(v, MinRRms, MaxRRms) {
			return rangeErr(path+".rr_ms["+strconv.Itoa(j)+"]", v, MinRRms, MaxRRms)
		}
	}
	if s.BPM != nil {
		return checkRange(path+".bpm", *s.BPM, MinBPM, MaxBPM)
	}
	return nil
}

func (s *Sample) validateText(path string) error {
	if strings.TrimSpace(s.Text) == "" {
		return fieldErr(path+".text", "is required for kind text")
	}
	if !utf8.ValidString(s.Text) {
		return fieldErr(path+".text", "invalid UTF-8")
	}
	if n := utf8.RuneCountInString(s.Text); n > MaxTextRunes {
		return fieldErr(path+".text", "%d characters; at most %d", n, MaxTextRunes)
	}
	if s.Source != "" && s.Source != "chat" && s.Source != "speech" {
		return fieldErr(path+".source", "unknown source %q; want chat or speech", s.Source)
	}
	return nil
}

func (s *Sample) validateQuestionnaire(path string) error {
	if s.BRS == nil && s.Mood == nil {
		return fieldErr(path+".brs", "a questionnaire needs brs (six answers 1–5) or mood (1–5)")
	}
	if s.BRS != nil {
		if len(s.BRS) != 6 {
			return fieldErr(path+".brs", "the Brief Resilience Scale has 6 items, got %d", len(s.BRS))
		}
		for j, v := range s.BRS {
			if v < 1 || v > 5 {
				return fieldErr(fmt.Sprintf("%s.brs[%d]", path, j), "answer %d is outside 1–5", v)
			}
		}
	}
	if s.Mood != nil && (*s.Mood < 1 || *s.Mood > 5) {
		return fieldErr(path+".mood", "%d is outside 1–5", *s.Mood)
	}
	return nil
}

func (s *Sample) validateTrials(path string) error {
	if len(s.Trials) == 0 {
		return fieldErr(path+".trials", "is required for kind sart")
	}
	if len(s.Trials) > MaxTrialsSample {
		return fieldErr(path+".trials", "more than %d trials", MaxTrialsSample)
	}
	for j, t := range s.Trials {
		f := func(field string) string { return path + ".trials[" + strconv.Itoa(j) + "]." + field }
		if t.Digit < 0 || t.Digit > 9 {
			return fieldErr(f("digit"), "%d is not a digit 0–9", t.Digit)
		}
		if !inRange(t.RTms, 0, MaxReactionTimeMS) {
			return rangeErr(f("rt_ms"), t.RTms, 0, MaxReactionTimeMS)
		}
		if t.Responded && t.RTms == 0 {
			return fieldErr(f("rt_ms"), "is required when responded is true")
		}
	}
	return nil
}

func (s *Sample) validateIntervention(path string, known []string) error {
	if s.Intervention == "" {
		return fieldErr(path+".intervention", "is required for kind intervention")
	}
	if !slices.Contains(known, s.Intervention) {
		return fieldErr(path+".intervention", "unknown or disabled intervention %q; this program enables %v", s.Intervention, known)
	}
	if s.Completed == nil {
		return fieldErr(path+".completed", "is required for kind intervention")
	}
	if s.Rating != nil && (*s.Rating < 1 || *s.Rating > 5) {
		return fieldErr(path+".rating", "%d is outside 1–5", *s.Rating)
	}
	if s.Decision != "" && !ValidDecisionID(s.Decision) {
		return fieldErr(path+".decision", "%q is not a decision ID (16 hex digits, '-', 8 hex digits)", s.Decision)
	}
	return nil
}

// ValidDecisionID reports whether id has the form of a decision ID.
func ValidDecisionID(id string) bool {
	if len(id) != 25 || id[16] != '-' {
		return false
	}
	for i := range len(id) {
		if c := id[i]; i != 16 && (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
