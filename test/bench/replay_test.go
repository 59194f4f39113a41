package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

// recordedWrite is one write request the operator sent, as it went on the
// wire, and the class of the API server's answer.
type recordedWrite struct {
	method, path, rawQuery string
	// contentType and accept are the request's headers: the replay asks
	// for the same encodings, so the API server decodes and encodes as
	// much as it did for the operator.
	contentType, accept string
	body                []byte
	// succeeded: the operator's request got a 2xx answer. A replayed
	// write that did must too; one that did not may end either way.
	succeeded bool
}

// writeRecorder keeps every write request passing through it until
// stopped. It reads each body into memory (the operator's client sends
// bodies of a known length, so nothing streams).
type writeRecorder struct {
	next    http.RoundTripper
	stopped atomic.Bool
	mu      sync.Mutex
	writes  []*recordedWrite
}

func (r *writeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.stopped.Load() || !isWrite(req.Method) {
		return r.next.RoundTrip(req)
	}
	w := &recordedWrite{method: req.Method, path: req.URL.Path, rawQuery: req.URL.RawQuery,
		contentType: req.Header.Get("Content-Type"), accept: req.Header.Get("Accept")}
	if req.Body != nil {
		body, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("record %s %s: %w", req.Method, req.URL.Path, err)
		}
		w.body = body
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	// Appended before it is sent: writes to one object are kept in the
	// order the operator made them.
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		w.succeeded = resp.StatusCode/100 == 2
		r.mu.Unlock()
	}
	return resp, err
}

func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// recording stops the recorder and returns a copy of what it kept (a
// write still in flight may yet set its answer's class in the original).
func (r *writeRecorder) recording() []*recordedWrite {
	r.stopped.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	writes := make([]*recordedWrite, len(r.writes))
	for i, w := range r.writes {
		c := *w
		writes[i] = &c
	}
	return writes
}

// writeReplay is the floor: the operator's own writes, byte for byte, sent
// to a fresh API server holding the same worlds and programs, with no read,
// no watch and nothing computed. Only the names the API server chose
// differ: the UIDs of the worlds and programs (owner references and the
// status writes' metadata), and the resourceVersion a status write must
// carry. An update (PUT) of any other object, such as a rotated token or
// a renewed certificate, carries a resourceVersion the replay cannot put
// right (often in protobuf) and fails the run; the operator makes none
// before its programs are Reconciled. So does a create client-go retried
// (after a 429), whose second copy is refused where the first was not.
type writeReplay struct {
	http *http.Client
	host string
	// objects are the writes grouped by the object they write, in the
	// order of their first write; each group's writes are sent in order.
	objects [][]*recordedWrite
	// resourceVersions holds the current resourceVersion of every object
	// a status write may update (the programs and worlds), by path
	// without the subresource; each successful write moves it on.
	mu               sync.Mutex
	resourceVersions map[string]string
	// refused counts the writes the API server refused, as it had refused
	// the operator's.
	refused atomic.Int64
}

// newWriteReplay prepares the recorded writes for the API server of cfg,
// which holds the same worlds and programs under the UIDs in floorUIDs
// (keyed like recordedUIDs by namespace/name, worlds by name) at the
// resourceVersions in resourceVersions (by object path).
func newWriteReplay(cfg *rest.Config, scheme *runtime.Scheme, recorded []*recordedWrite, recordedUIDs, floorUIDs, resourceVersions map[string]string, wrap func(http.RoundTripper) http.RoundTripper) (*writeReplay, error) {
	cfg = controllers.RESTConfig(cfg)
	cfg.Wrap(wrap)
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("replay client: %w", err)
	}
	pairs := make([]string, 0, 2*len(recordedUIDs))
	for key, uid := range recordedUIDs {
		to, ok := floorUIDs[key]
		if !ok {
			return nil, fmt.Errorf("replay: %s has no counterpart on the floor's API server", key)
		}
		pairs = append(pairs, uid, to)
	}
	uids := strings.NewReplacer(pairs...)
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	byObject := map[string]int{}
	var objects [][]*recordedWrite
	for _, w := range recorded {
		// A UID keeps its length, so the substitution is as safe in a
		// protobuf body as in JSON.
		replayed := *w
		replayed.body = []byte(uids.Replace(string(w.body)))
		key := objectPath(w.path)
		if w.method == http.MethodPost {
			// A create is of the object its body names: two creates of
			// one name (the second refused) keep their order.
			obj, _, err := decoder.Decode(w.body, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("replay: decode the create at %s: %w", w.path, err)
			}
			named, ok := obj.(metav1.Object)
			if !ok || named.GetName() == "" {
				return nil, fmt.Errorf("replay: the create at %s names no object", w.path)
			}
			key = w.path + "/" + named.GetName()
		}
		i, seen := byObject[key]
		if !seen {
			i = len(objects)
			objects = append(objects, nil)
			byObject[key] = i
		}
		objects[i] = append(objects[i], &replayed)
	}
	return &writeReplay{http: httpClient, host: strings.TrimSuffix(cfg.Host, "/"), objects: objects, resourceVersions: resourceVersions}, nil
}

// objectPath is an API path without its subresource:
// .../meditationprograms/p/status -> .../meditationprograms/p.
func objectPath(path string) string {
	if parts := resourcePath(path); len(parts) == 3 {
		return strings.TrimSuffix(path, "/"+parts[2])
	}
	return path
}

// run sends every write, the objects parallelism at a time as the
// operator's workers send them; it returns the first write that failed
// where the operator's had not.
func (r *writeReplay) run(ctx context.Context) error {
	return parallelUntilError(len(r.objects), func(i int) error {
		for _, w := range r.objects[i] {
			if err := r.send(ctx, w); err != nil {
				return err
			}
		}
		return nil
	})
}

func (r *writeReplay) send(ctx context.Context, w *recordedWrite) error {
	body := w.body
	object := objectPath(w.path)
	if w.method == http.MethodPut {
		var err error
		if body, err = r.withResourceVersion(object, body); err != nil {
			return fmt.Errorf("replay PUT %s: %w", w.path, err)
		}
	}
	url := r.host + w.path
	if w.rawQuery != "" {
		url += "?" + w.rawQuery
	}
	req, err := http.NewRequestWithContext(ctx, w.method, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("replay %s %s: %w", w.method, w.path, err)
	}
	if w.contentType != "" {
		req.Header.Set("Content-Type", w.contentType)
	}
	if w.accept != "" {
		req.Header.Set("Accept", w.accept)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("replay %s %s: %w", w.method, w.path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("replay %s %s: read the answer: %w", w.method, w.path, err)
	}
	if resp.StatusCode/100 != 2 {
		if w.succeeded {
			return fmt.Errorf("replay %s %s: %s where the operator's succeeded: %.300s", w.method, w.path, resp.Status, answer)
		}
		r.refused.Add(1)
		return nil
	}
	r.track(object, resp.Header.Get("Content-Type"), answer)
	return nil
}

// withResourceVersion puts the object's current resourceVersion into a
// recorded update (JSON: the programs and worlds are custom resources).
func (r *writeReplay) withResourceVersion(object string, body []byte) ([]byte, error) {
	r.mu.Lock()
	current, ok := r.resourceVersions[object]
	r.mu.Unlock()
	if !ok {
		return nil, errors.New("no resourceVersion known for the object")
	}
	const field = `"resourceVersion":"`
	start := bytes.Index(body, []byte(field))
	if start < 0 {
		return nil, errors.New("the recorded update carries no resourceVersion")
	}
	start += len(field)
	end := bytes.IndexByte(body[start:], '"')
	if end < 0 {
		return nil, errors.New("the recorded update's resourceVersion is not closed")
	}
	out := make([]byte, 0, len(body)+len(current))
	out = append(out, body[:start]...)
	out = append(out, current...)
	return append(out, body[start+end:]...), nil
}

// track notes the resourceVersion of an object a later update may need
// (only those with one already known: the programs and worlds).
func (r *writeReplay) track(object, contentType string, answer []byte) {
	r.mu.Lock()
	_, wanted := r.resourceVersions[object]
	r.mu.Unlock()
	if !wanted || !strings.HasPrefix(contentType, "application/json") {
		return
	}
	var written struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(answer, &written) == nil && written.Metadata.ResourceVersion != "" {
		r.mu.Lock()
		r.resourceVersions[object] = written.Metadata.ResourceVersion
		r.mu.Unlock()
	}
}

// replayOn prepares recorded for cp, which holds the worlds and programs
// the recording's API server held (under recordedUIDs there), with every
// write it sends counted; floorUIDs are cp's UIDs of them.
func replayOn(tb testing.TB, cp *controlPlane, recorded []*recordedWrite, recordedUIDs map[string]string) (replay *writeReplay, counter *writeCounter, floorUIDs map[string]string) {
	tb.Helper()
	floorUIDs, resourceVersions, err := replayTargets(context.Background(), cp)
	if err != nil {
		tb.Fatal(err)
	}
	counter = &writeCounter{}
	replay, err = newWriteReplay(cp.cfg, cp.scheme, recorded, recordedUIDs, floorUIDs, resourceVersions,
		func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	if err != nil {
		tb.Fatal(err)
	}
	return replay, counter, floorUIDs
}

// replayTargets are the UIDs (by namespace/name, worlds by name) and the
// resourceVersions (by API path) of the worlds and programs on an API
// server.
func replayTargets(ctx context.Context, cp *controlPlane) (uids, resourceVersions map[string]string, err error) {
	uids, resourceVersions = map[string]string{}, map[string]string{}
	worldList := &wellbeingv1alpha1.VirtualWorldList{}
	if err := cp.client.List(ctx, worldList); err != nil {
		return nil, nil, err
	}
	for _, w := range worldList.Items {
		uids[w.Name] = string(w.UID)
		resourceVersions["/apis/"+wellbeingv1alpha1.GroupVersion.String()+"/virtualworlds/"+w.Name] = w.ResourceVersion
	}
	programList := &wellbeingv1alpha1.MeditationProgramList{}
	if err := cp.client.List(ctx, programList); err != nil {
		return nil, nil, err
	}
	for _, p := range programList.Items {
		uids[p.Namespace+"/"+p.Name] = string(p.UID)
		resourceVersions["/apis/"+wellbeingv1alpha1.GroupVersion.String()+"/namespaces/"+p.Namespace+"/meditationprograms/"+p.Name] = p.ResourceVersion
	}
	return uids, resourceVersions, nil
}
