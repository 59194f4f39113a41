package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
)

// answerlessApplier sends server-side applies and leaves the API server's
// answer undecoded: no reconciler reads it (a child is judged from the
// watch, which delivers it anyway). controller-runtime's client decodes
// an unstructured apply's answer from JSON, which was about a tenth of
// the operator's own CPU while it set up 500 programs (make
// bench-operator).
// A built-in kind's answer is asked for in protobuf, as controller-runtime
// asks for its typed requests: cheaper for the API server to encode. An
// error answer (a Status) is decoded as before, so callers see the same
// API errors.
type answerlessApplier struct {
	cfg        *rest.Config
	httpClient *http.Client
	mapper     meta.RESTMapper
	scheme     *runtime.Scheme
	codecs     serializer.CodecFactory

	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]applyTarget
}

// applyTarget is what an apply of one kind needs, kept per kind: the
// mapper allocates a new mapping on every call, about a quarter of what an
// apply allocated at 5,000 programs.
type applyTarget struct {
	rc      rest.Interface
	mapping *meta.RESTMapping
}

// newAnswerlessApplier sends applies with mgr's configuration, HTTP client,
// mapper and scheme.
func newAnswerlessApplier(mgr cluster.Cluster) *answerlessApplier {
	return &answerlessApplier{cfg: mgr.GetConfig(), httpClient: mgr.GetHTTPClient(), mapper: mgr.GetRESTMapper(), scheme: mgr.GetScheme(),
		codecs: serializer.NewCodecFactory(mgr.GetScheme()), kinds: map[schema.GroupVersionKind]applyTarget{}}
}

// apply sends u as a server-side apply under opts. The answer's body is
// read into a small pooled buffer and dropped, not into memory whole.
func (a *answerlessApplier) apply(ctx context.Context, u *unstructured.Unstructured, opts *client.ApplyOptions) error {
	gvk := u.GroupVersionKind()
	target, err := a.target(gvk)
	if err != nil {
		return err
	}
	body, err := json.Marshal(u.Object)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", gvk.Kind, u.GetName(), err)
	}
	req := target.rc.Patch(types.ApplyPatchType).Resource(target.mapping.Resource.Resource).Name(u.GetName()).
		VersionedParams(opts.AsPatchOptions(), metav1.ParameterCodec).Body(body)
	if target.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		req = req.Namespace(u.GetNamespace())
	}
	// Stream decodes an error answer as Do does; a success is drained so
	// the connection's stream ends cleanly.
	answer, err := req.Stream(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = answer.Close() }()
	if _, err := io.Copy(io.Discard, answer); err != nil {
		return fmt.Errorf("read the answer to the apply of %s %s: %w", gvk.Kind, u.GetName(), err)
	}
	return nil
}

// target is the REST mapping and client of gvk: a typed client (protobuf
// for built-in kinds) where the scheme knows the kind, unstructured (JSON)
// where it does not (cert-manager's Certificate, the Prometheus operator's
// PodMonitor). Only a kind the mapper knows is kept, so a CRD installed
// later is found once it is.
func (a *answerlessApplier) target(gvk schema.GroupVersionKind) (applyTarget, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.kinds[gvk]; ok {
		return t, nil
	}
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return applyTarget{}, fmt.Errorf("map %s: %w", gvk, err)
	}
	rc, err := apiutil.RESTClientForGVK(gvk, false, !a.scheme.Recognizes(gvk), a.cfg, a.codecs, a.httpClient)
	if err != nil {
		return applyTarget{}, fmt.Errorf("REST client for %s: %w", gvk, err)
	}
	t := applyTarget{rc: rc, mapping: mapping}
	a.kinds[gvk] = t
	return t, nil
}
