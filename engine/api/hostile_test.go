package api_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// TestHostileBodiesStoreNothing sends the hostile bodies to a real
// engine on both stores: each is refused with 400 naming the precise field,
// and the store is byte for byte what it was.
func TestHostileBodiesStoreNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("dup-a", "behaviour", "questionnaire", "physiology", "text")
		e.consent("victim-1", "behaviour", "questionnaire", "physiology", "text")
		at := `"at":"` + e.ts(0) + `"`
		before := e.snapshot()
		for _, tc := range []struct {
			name, method, path, body string
			field, msg               string
		}{
			{"duplicate user", "POST", "/v1/telemetry", `[{"user":"dup-a","user":"victim-1","kind":"heart_rate",` + at + `,"bpm":70}]`, "samples[0].user", "duplicate key"},
			{"case-variant user", "POST", "/v1/telemetry", `[{"user":"dup-a","USER":"victim-1","kind":"heart_rate",` + at + `,"bpm":70}]`, "samples[0].USER", "only in case"},
			{"case-variant names", "POST", "/v1/telemetry", `[{"User":"victim-1","KIND":"heart_rate",` + at + `,"BPM":70}]`, "samples[0].User", `did you mean "user"`},
			{"duplicate in NDJSON", "POST", "/v1/telemetry", `{"user":"victim-1","kind":"heart_rate",` + at + `,"bpm":70,"bpm":71}` + "\n", "samples[0].bpm", "duplicate key"},
			{"NaN", "POST", "/v1/telemetry", `[{"user":"victim-1","kind":"heart_rate",` + at + `,"bpm":NaN}]`, "samples[0].bpm", "NaN"},
			{"Infinity", "POST", "/v1/telemetry", `[{"user":"victim-1","kind":"rr",` + at + `,"rr_ms":[800,Infinity]}]`, "samples[0].rr_ms[1]", "Infinity"},
			{"invalid UTF-8", "POST", "/v1/telemetry", "[{\"user\":\"victim-1\",\"kind\":\"text\"," + at + ",\"text\":\"\xc3\x28\"}]", "samples[0].text", "invalid UTF-8"},
			{"bad timestamp", "POST", "/v1/telemetry", `[{"user":"victim-1","kind":"text","at":"28/11/2026","text":"hi"}]`, "samples[0].at", "RFC 3339"},
			{"unknown key in an event", "POST", "/v1/telemetry", `[{"user":"victim-1","kind":"behaviour",` + at + `,"events":[{"type":"focus",` + at + `,"x":1}]}]`, "samples[0].events[0].x", "unknown field"},
			{"invisible character in the user", "POST", "/v1/telemetry", `[{"user":"victim-1\u200b","kind":"text",` + at + `,"text":"hi"}]`, "samples[0].user", "U+200B"},
			{"consent scopes twice", "POST", "/v1/users/victim-1/consent", `{"scopes":["text"],"scopes":["behaviour","physiology","text","research"]}`, "scopes", "duplicate key"},
			{"consent scopes case variant", "POST", "/v1/users/victim-1/consent", `{"scopes":["text"],"SCOPES":["research"]}`, "SCOPES", "only in case"},
			{"unknown consent key", "POST", "/v1/users/victim-1/consent", `{"scopes":["research"],"expires":"never"}`, "expires", "unknown field"},
			{"withdrawal with unknown key", "DELETE", "/v1/users/victim-1/consent", `{"scope":["text"]}`, "scope", "unknown field"},
			{"decision available twice", "POST", "/v1/users/victim-1/decisions", `{"available":false,"available":true}`, "available", "duplicate key"},
			{"decision unknown key", "POST", "/v1/users/victim-1/decisions", `{"context":["idle"],"force":"BodyScan"}`, "force", "unknown field"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctype := api.MediaJSON
				if !strings.HasPrefix(tc.body, "[") && tc.path == "/v1/telemetry" {
					ctype = api.MediaNDJSON
				}
				expect(t, e.do(tc.method, tc.path, rwToken, ctype, tc.body), 400, tc.field, tc.msg)
			})
		}
		if after := e.snapshot(); after != before {
			t.Errorf("a refused request changed the store:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// TestLookAlikeUserIDsAreRefused: IDs that look like victim-1, and path
// tricks, are refused on every user endpoint with 400 naming the path
// segment; the victim's record is untouched.
func TestLookAlikeUserIDsAreRefused(t *testing.T) {
	e := startEngine(t, testConfig("Social", 2))
	e.consent("victim-1", "behaviour", "questionnaire")
	e.mood("victim-1", 4)
	before := e.snapshot()
	for segment, want := range map[string]string{
		"victim-1%E2%80%8B": "U+200B",       // zero-width space
		"victim-1%E2%80%AE": "U+202E",       // right-to-left override
		"victim-1%C2%85":    "U+0085",       // next line (C1)
		"%EF%BB%BFvictim-1": "U+FEFF",       // byte-order mark
		"..%2F..%2Fadmin":   "begins with",  // percent-encoded traversal
		"victim%2F1":        `'/' (U+002F)`, // a slash inside the segment
		"victim-1%252F":     `'%' (U+0025)`, // encoded twice
		"victim-e%CC%81":    "NFC",          // e + combining acute
		"victim%201":        "white space",
	} {
		for _, route := range []struct{ method, suffix, body string }{
			{"GET", "/state", ""},
			{"POST", "/consent", `{"scopes":["behaviour"]}`},
			{"DELETE", "/consent", ""},
			{"POST", "/decisions", ""},
			{"DELETE", "", ""},
		} {
			r := e.do(route.method, "/v1/users/"+segment+route.suffix, rwToken, "", route.body)
			expect(t, r, 400, "id", want)
			if !strings.Contains(r.body["error"].(string), "path segment {id}") {
				t.Errorf("%s %s: error %q does not name the path segment", route.method, segment, r.body["error"])
			}
		}
	}
	if after := e.snapshot(); after != before {
		t.Error("a refused ID changed the store")
	}
	if r := e.do("GET", "/v1/users/victim-1/state", rwToken, "", nil); r.status != 200 || r.body["samples"].(float64) != 1 {
		t.Errorf("victim-1: %d %s", r.status, r.raw)
	}
	// Canonical IDs beyond ASCII work.
	e.consent("%C3%BCnic%C3%B6de", "behaviour", "questionnaire") // ünicöde, NFC
	expect(t, e.do("GET", "/v1/users/%C3%BCnic%C3%B6de/state", rwToken, "", nil), 200, "", "")
}

func TestContentTypesAndMethods(t *testing.T) {
	e := startEngine(t, testConfig("Social", 2))
	e.consent("u1", "behaviour", "questionnaire")
	sample := `[{"user":"u1","kind":"questionnaire","at":"` + e.ts(0) + `","mood":3}]`
	for _, tc := range []struct{ path, ctype, body string }{
		{"/v1/telemetry", "text/plain", sample},
		{"/v1/telemetry", "application/x-www-form-urlencoded", sample}, // curl -d without -H
		{"/v1/telemetry", "application/json; charset=latin1", sample},
		{"/v1/telemetry", "multipart/form-data; boundary=x", sample},
		{"/v1/users/u1/consent", api.MediaNDJSON, `{"scopes":["text"]}`},
		{"/v1/users/u1/consent", "text/json", `{"scopes":["text"]}`},
		{"/v1/users/u1/decisions", "application/xml", `<available>true</available>`},
		{"/v1/users/u1/decisions", "not a media type", `{}`},
	} {
		expect(t, e.do("POST", tc.path, rwToken, tc.ctype, tc.body), 415, "Content-Type", "application/json")
	}
	for _, ctype := range []string{"", api.MediaJSON, "application/json; charset=utf-8", "Application/JSON"} {
		expect(t, e.do("POST", "/v1/telemetry", rwToken, ctype, sample), 200, "", "")
	}

	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/v1/telemetry", "POST"},
		{"PUT", "/v1/telemetry", "POST"},
		{"POST", "/v1/cohort", "GET, HEAD"},
		{"PATCH", "/v1/users/u1/consent", "POST, DELETE"},
		{"PUT", "/v1/users/u1/state", "GET, HEAD"},
		{"POST", "/v1/users/u1", "DELETE"},
		{"DELETE", "/v1/decisions", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		r, headers := e.doWith(tc.method, tc.path, rwToken, nil, nil)
		expect(t, r, 405, "method", "not allowed")
		if got := headers.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
	r, headers := e.doWith("GET", "/v1/nothing-here", rwToken, nil, nil)
	expect(t, r, 404, "path", "no such endpoint")
	if headers.Get("Allow") != "" {
		t.Errorf("404 with Allow %q", headers.Get("Allow"))
	}

	// 1001 samples: the 413 the docs promise, as a JSON array and as NDJSON.
	var nd strings.Builder
	for range 1001 {
		fmt.Fprintf(&nd, `{"user":"u1","kind":"questionnaire","at":%q,"mood":3}`+"\n", e.ts(0))
	}
	expect(t, e.do("POST", "/v1/telemetry", rwToken, api.MediaNDJSON, nd.String()), 413, "samples", "more than 1000")
	array := "[" + strings.ReplaceAll(strings.TrimSuffix(nd.String(), "\n"), "\n", ",") + "]"
	expect(t, e.do("POST", "/v1/telemetry", rwToken, api.MediaJSON, array), 413, "samples", "more than 1000")
}

// earlyAnswers is what the server has sent on each connection, read for
// at most 100 ms apiece: a request still waiting for its body has nothing.
func earlyAnswers(conns []net.Conn) string {
	var out []string
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		switch {
		case n > 0:
			out = append(out, fmt.Sprintf("%d: %q", i, buf[:n]))
		case err != nil:
			out = append(out, fmt.Sprintf("%d: nothing (%v)", i, err))
		}
	}
	return strings.Join(out, "; ")
}

// TestSlowBodiesHoldAtMostTheClientsCap: clients that send headers and
// then trickle their bodies hold at most the per-token cap of requests;
// beyond it the token is answered 429 at once, other tokens are served,
// and the slots come back when the slow requests end.
func TestSlowBodiesHoldAtMostTheClientsCap(t *testing.T) {
	cfg := testConfig("Social", 2)
	db := backends[0].open(t)
	t.Cleanup(func() { _ = db.Close() })
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 3
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: rwToken, ReadOnly: roToken}, discardLogger(), api.WithMaxInFlightPerClient(limit)))
	t.Cleanup(srv.Close)
	e := &engine{t: t, url: srv.URL, svc: svc, store: db}

	var slow []net.Conn
	for range limit {
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		// Headers promise 1000 bytes; one arrives.
		fmt.Fprintf(conn, "POST /v1/telemetry HTTP/1.1\r\nHost: engine\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[", rwToken)
		slow = append(slow, conn)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, headers := e.doWith("GET", "/v1/cohort", rwToken, nil, nil)
		if r.status == http.StatusTooManyRequests {
			expect(t, r, 429, "Authorization", "requests in progress")
			if headers.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow bodies never filled the token's %d slots (last answer %d); the slow connections got: %s", limit, r.status, earlyAnswers(slow))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Another client is served meanwhile.
	expect(t, e.do("GET", "/v1/cohort", roToken, "", nil), 200, "", "")
	// The slow clients give up: their slots come back.
	for _, conn := range slow {
		_ = conn.Close()
	}
	deadline = time.Now().Add(10 * time.Second)
	for e.do("GET", "/v1/cohort", rwToken, "", nil).status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the token's slots did not come back after the slow requests ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A slow request that completes is answered normally.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	fmt.Fprintf(conn, "POST /v1/users/u9/consent HTTP/1.1\r\nHost: engine\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"scopes\":", rwToken)
	time.Sleep(50 * time.Millisecond)
	fmt.Fprint(conn, `["text"]}`+"\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("completed slow request: %d", resp.StatusCode)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
