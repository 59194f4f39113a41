// Package strictjson decodes the engine's request bodies strictly: exactly
// one JSON value, valid UTF-8 (no lone surrogate escapes), no duplicate
// keys, no keys that differ from a field's name only in case, no unknown
// fields, no NaN or Infinity, numbers that fit their field, RFC 3339
// timestamps; every rejection names the field.
//
// Two decoders give the verdict. The fast one is go-json with
// encoding/json/v2 semantics; the standard one is encoding/json behind a
// walk of its tokens against the target type, which refuses what
// encoding/json alone would accept (it matches keys case-insensitively and
// lets the last duplicate win) and names the field of each error. Decode
// accepts what the fast decoder accepts; a body it refuses is refused,
// with the standard decoder's error. The fuzz targets hold the two to the
// same verdicts and the same values.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/goccy/go-json/jsontext"
	gojson "github.com/goccy/go-json/v2"
)

// Error is a refused body. Path is where, relative to the decoded value.
type Error struct {
	Path    Path
	Message string
}

func (e *Error) Error() string {
	if f := e.Path.String(); f != "" {
		return f + ": " + e.Message
	}
	return e.Message
}

// Field is the offending field's name under root, the name the caller
// gives the whole value ("samples", or "" for a body that is one object):
// samples[3].at, scopes[0], events[1].type.
func (e *Error) Field(root string) string { return e.Path.Under(root) }

// Segment is one step of a Path: an object member or an array index.
type Segment struct {
	Name  string
	Index int
	// IsIndex says the segment is Index, not Name.
	IsIndex bool
}

// Path locates a value inside a JSON document.
type Path []Segment

// maxNameInPath bounds how much of a client-sent key an error repeats.
const maxNameInPath = 64

// Under writes the path after root: root[3].name, or name alone when root
// is empty. Names that are not plain identifiers are quoted.
func (p Path) Under(root string) string {
	var b strings.Builder
	b.WriteString(root)
	for _, s := range p {
		if s.IsIndex {
			b.WriteString("[" + strconv.Itoa(s.Index) + "]")
			continue
		}
		name := s.Name
		if !plainName(name) {
			if len(name) > maxNameInPath {
				name = strings.ToValidUTF8(name[:maxNameInPath], "") + "…"
			}
			b.WriteString("[" + strconv.QuoteToASCII(name) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(name)
	}
	return b.String()
}

func (p Path) String() string { return p.Under("") }

func plainName(s string) bool {
	if s == "" || len(s) > maxNameInPath {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func (p Path) with(s Segment) Path {
	out := make(Path, len(p), len(p)+1)
	copy(out, p)
	return append(out, s)
}

// Decode decodes data, one JSON value, into v (a non-nil pointer). The
// fast decoder decides; a refusal is explained by the standard decoder.
func Decode(data []byte, v any) error {
	if Fast(data, v) == nil {
		return nil
	}
	// Start from zero: the fast decoder may have filled part of v.
	reflect.ValueOf(v).Elem().SetZero()
	err := Standard(data, v)
	if err == nil {
		// The decoders disagree (the fuzz targets exist to find this):
		// the refusal stands, in the fast decoder's words.
		reflect.ValueOf(v).Elem().SetZero()
		return fastError(Fast(data, v))
	}
	return err
}

// Fast decodes with go-json (encoding/json/v2 semantics) and unknown
// members refused. Its errors carry a JSON pointer but no field name.
func Fast(data []byte, v any) error {
	return gojson.Unmarshal(data, v, gojson.RejectUnknownMembers(true))
}

// fastError turns a go-json error into an *Error at its JSON pointer.
func fastError(err error) error {
	if err == nil {
		return &Error{Message: "refused by the strict decoder"}
	}
	var pointer jsontext.Pointer
	var semantic *gojson.SemanticError
	var syntactic *jsontext.SyntacticError
	switch {
	case errors.As(err, &semantic):
		pointer = semantic.JSONPointer
	case errors.As(err, &syntactic):
		pointer = syntactic.JSONPointer
	}
	var path Path
	for tok := range pointer.Tokens() {
		if i, err := strconv.Atoi(tok); err == nil && i >= 0 && strconv.Itoa(i) == tok {
			path = append(path, Segment{Index: i, IsIndex: true})
		} else {
			path = append(path, Segment{Name: tok})
		}
	}
	return &Error{Path: path, Message: "invalid JSON"}
}

// Standard decodes with encoding/json after walking every token of data
// against v's type: the walk refuses duplicate and case-variant keys,
// unknown fields, lone surrogate escapes and everything else the fast
// decoder refuses, and names the field.
func Standard(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &Error{Message: fmt.Sprintf("strictjson: decode into %T, want a non-nil pointer", v)}
	}
	w := &walker{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if err := w.value(rv.Type().Elem(), nil); err != nil {
		return err
	}
	if _, err := w.dec.Token(); err != io.EOF {
		return &Error{Message: "unexpected data after the JSON value"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// The walk accepted what encoding/json refuses: a gap in the walk.
		return &Error{Message: fmt.Sprintf("invalid JSON: %v", err)}
	}
	return nil
}

type walker struct {
	data []byte
	dec  *json.Decoder
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// token reads the next token and checks the bytes it spans: valid UTF-8
// and no lone surrogate escape (encoding/json replaces both silently).
func (w *walker) token(at Path) (json.Token, error) {
	start := w.dec.InputOffset()
	tok, err := w.dec.Token()
	if err != nil {
		return nil, w.syntaxError(err, at, start)
	}
	if _, isString := tok.(string); isString {
		if msg := checkStringBytes(w.data[start:w.dec.InputOffset()]); msg != "" {
			return nil, &Error{Path: at, Message: msg}
		}
	}
	return tok, nil
}

func (w *walker) syntaxError(err error, at Path, start int64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Path: at, Message: "truncated JSON"}
	}
	rest := bytes.TrimLeft(w.data[min(int(start), len(w.data)):], " \t\r\n:,")
	for _, literal := range []string{"NaN", "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "nan"} {
		if bytes.HasPrefix(rest, []byte(literal)) {
			return &Error{Path: at, Message: literal + " is not a JSON number; send a finite number"}
		}
	}
	if !utf8.Valid(rest[:min(len(rest), utf8.UTFMax)]) {
		return &Error{Path: at, Message: "invalid UTF-8"}
	}
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return &Error{Path: at, Message: fmt.Sprintf("malformed JSON at offset %d: %v", syntax.Offset, syntax)}
	}
	return &Error{Path: at, Message: fmt.Sprintf("invalid JSON: %v", err)}
}

// checkStringBytes checks the raw bytes of a string token (with whatever
// separators precede it): valid UTF-8, and \u escapes that form whole
// characters. It returns what is wrong, or "".
func checkStringBytes(raw []byte) string {
	if !utf8.Valid(raw) {
		return "invalid UTF-8"
	}
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if raw[i+1] != 'u' {
			i++ // a two-byte escape such as \\ or \"
			continue
		}
		r, ok := hex4(raw, i+2)
		if !ok {
			return "invalid \\u escape"
		}
		i += 5
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return "a lone surrogate escape (\\u" + strconv.FormatInt(int64(r), 16) + ") is not a character"
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return "a lone surrogate escape (\\u" + strconv.FormatInt(int64(r), 16) + ") is not a character"
			}
			low, ok := hex4(raw, i+3)
			if !ok || low < 0xDC00 || low > 0xDFFF {
				return "a lone surrogate escape (\\u" + strconv.FormatInt(int64(r), 16) + ") is not a character"
			}
			i += 6
		}
	}
	return ""
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	return rune(v), err == nil
}

// value walks one JSON value that encoding/json would decode into t.
func (w *walker) value(t reflect.Type, at Path) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return w.timestamp(at)
	case t == rawMessageType || t.Kind() == reflect.Interface:
		return w.anyValue(at)
	case reflect.PointerTo(t).Implements(jsonUnmarshaler):
		return w.unmarshaler(t, at)
	}
	tok, err := w.token(at)
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null leaves the field at zero in both decoders
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) && t.Kind() != reflect.Slice {
		s, ok := tok.(string)
		if !ok {
			return w.skipMismatch(tok, "a string", at)
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			return &Error{Path: at, Message: fmt.Sprintf("invalid value: %v", err)}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if tok != json.Delim('{') {
			return w.skipMismatch(tok, "an object", at)
		}
		return w.object(at, fieldsOf(t), nil)
	case reflect.Map:
		if tok != json.Delim('{') {
			return w.skipMismatch(tok, "an object", at)
		}
		if k := t.Key().Kind(); k != reflect.String {
			return &Error{Path: at, Message: fmt.Sprintf("strictjson: map key kind %s is not supported", k)}
		}
		return w.object(at, nil, t.Elem())
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			s, ok := tok.(string)
			if !ok {
				return w.skipMismatch(tok, "a base64 string", at)
			}
			if _, err := base64.StdEncoding.Strict().DecodeString(s); err != nil {
				return &Error{Path: at, Message: "invalid base64"}
			}
			return nil
		}
		if tok != json.Delim('[') {
			return w.skipMismatch(tok, "an array", at)
		}
		for i := 0; w.dec.More(); i++ {
			if t.Kind() == reflect.Array && i >= t.Len() {
				return &Error{Path: at, Message: fmt.Sprintf("more than %d elements", t.Len())}
			}
			if err := w.value(t.Elem(), at.with(Segment{Index: i, IsIndex: true})); err != nil {
				return err
			}
		}
		_, err := w.token(at) // ]
		return err
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return w.skipMismatch(tok, "a string", at)
		}
		return nil
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return w.skipMismatch(tok, "true or false", at)
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.skipMismatch(tok, "an integer", at)
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			return &Error{Path: at, Message: fmt.Sprintf("%s is not an integer of %d bits", n, t.Bits())}
		}
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.skipMismatch(tok, "a non-negative integer", at)
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			return &Error{Path: at, Message: fmt.Sprintf("%s is not a non-negative integer of %d bits", n, t.Bits())}
		}
		return nil
	case reflect.Float32, reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.skipMismatch(tok, "a number", at)
		}
		if _, err := strconv.ParseFloat(string(n), t.Bits()); err != nil {
			return &Error{Path: at, Message: fmt.Sprintf("%s is out of range", n)}
		}
		return nil
	}
	return &Error{Path: at, Message: fmt.Sprintf("strictjson: %s is not supported", t)}
}

// object walks the members of an object whose '{' was read: a struct's
// (fields) or a map's (elem). Keys must be unique, also under case
// folding, and a struct's must each be a field's exact name.
func (w *walker) object(at Path, fields map[string]reflect.Type, elem reflect.Type) error {
	var seen []string
	for w.dec.More() {
		tok, err := w.token(at)
		if err != nil {
			return err
		}
		key := tok.(string) // encoding/json's tokenizer gives only string keys
		here := at.with(Segment{Name: key})
		for _, prior := range seen {
			switch {
			case prior == key:
				return &Error{Path: here, Message: "duplicate key"}
			case strings.EqualFold(prior, key):
				return &Error{Path: here, Message: fmt.Sprintf("duplicate key: differs from %q only in case", prior)}
			}
		}
		seen = append(seen, key)
		t := elem
		if fields != nil {
			var ok bool
			if t, ok = fields[key]; !ok {
				for name := range fields {
					if strings.EqualFold(name, key) {
						return &Error{Path: here, Message: fmt.Sprintf("unknown field; keys are case-sensitive: did you mean %q?", name)}
					}
				}
				return &Error{Path: here, Message: "unknown field"}
			}
		}
		if err := w.value(t, here); err != nil {
			return err
		}
	}
	_, err := w.token(at) // }
	return err
}

// anyValue walks a value of any shape (json.RawMessage, interfaces):
// syntax, UTF-8 and unique keys at every level.
func (w *walker) anyValue(at Path) error {
	tok, err := w.token(at)
	if err != nil {
		return err
	}
	return w.rest(tok, at)
}

// rest walks what follows tok when tok opens an object or an array.
func (w *walker) rest(tok json.Token, at Path) error {
	switch tok {
	case json.Delim('{'):
		return w.object(at, nil, reflect.TypeFor[any]())
	case json.Delim('['):
		for i := 0; w.dec.More(); i++ {
			if err := w.anyValue(at.with(Segment{Index: i, IsIndex: true})); err != nil {
				return err
			}
		}
		_, err := w.token(at)
		return err
	}
	if n, ok := tok.(json.Number); ok {
		// encoding/json decodes numbers into interfaces as float64.
		if _, err := strconv.ParseFloat(string(n), 64); err != nil {
			return &Error{Path: at, Message: fmt.Sprintf("%s is out of range", n)}
		}
	}
	return nil
}

// skipMismatch reports a value of the wrong JSON type.
func (w *walker) skipMismatch(tok json.Token, want string, at Path) error {
	return &Error{Path: at, Message: fmt.Sprintf("wrong type: got %s, want %s", kindOf(tok), want)}
}

func kindOf(tok json.Token) string {
	switch tok.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case json.Delim:
		if tok == json.Delim('{') {
			return "an object"
		}
		return "an array"
	}
	return "null"
}

// timestamp walks an RFC 3339 string, as both decoders read a time.Time:
// the fraction, when present, after a '.' (time.Parse also takes ',').
func (w *walker) timestamp(at Path) error {
	tok, err := w.token(at)
	if err != nil || tok == nil {
		return err
	}
	s, ok := tok.(string)
	if !ok {
		return w.skipMismatch(tok, "an RFC 3339 timestamp string", at)
	}
	var t time.Time
	if err := t.UnmarshalText([]byte(s)); err != nil || !strictRFC3339(s) {
		return &Error{Path: at, Message: "invalid timestamp: want RFC 3339, such as 2026-12-01T09:00:00Z"}
	}
	return nil
}

// strictRFC3339 refuses what time.Time.UnmarshalText takes but RFC 3339
// does not (and the fast decoder refuses): a one-digit hour, a comma
// before the fraction, a zone offset of 24 hours or 60 minutes and more.
// s has already been parsed.
func strictRFC3339(s string) bool {
	const date = len("2006-01-02T")
	if s[date+1] == ':' || strings.ContainsRune(s, ',') {
		return false
	}
	if s[len(s)-1] == 'Z' {
		return true
	}
	zone := s[len(s)-len("07:00"):]
	hours, errH := strconv.Atoi(zone[:2])
	minutes, errM := strconv.Atoi(zone[3:])
	return errH == nil && errM == nil && hours < 24 && minutes < 60
}

// unmarshaler walks a value of a type with its own UnmarshalJSON.
func (w *walker) unmarshaler(t reflect.Type, at Path) error {
	start := w.dec.InputOffset()
	var raw json.RawMessage
	if err := w.dec.Decode(&raw); err != nil {
		return w.syntaxError(err, at, start)
	}
	if err := Standard(raw, new(any)); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return &Error{Path: append(append(Path{}, at...), e.Path...), Message: e.Message}
		}
		return err
	}
	if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
		return &Error{Path: at, Message: fmt.Sprintf("invalid value: %v", err)}
	}
	return nil
}

var structFields sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps a struct's JSON names to field types as encoding/json
// sees them: exported fields, tag names, "-" skipped, untagged embedded
// structs' fields promoted.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := structFields.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	collectFields(t, m)
	structFields.Store(t, m)
	return m
}

func collectFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, into)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, taken := into[name]; !taken {
			into[name] = f.Type
		}
	}
}
