package controllers

import (
	"context"
	"encoding/json"
	"fmt"
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

	mu      sync.Mutex
	clients map[schema.GroupVersionKind]rest.Interface
}

func newAnswerlessApplier(cfg *rest.Config, httpClient *http.Client, mapper meta.RESTMapper, scheme *runtime.Scheme) *answerlessApplier {
	return &answerlessApplier{cfg: cfg, httpClient: httpClient, mapper: mapper, scheme: scheme,
		codecs: serializer.NewCodecFactory(scheme), clients: map[schema.GroupVersionKind]rest.Interface{}}
}

// apply sends u as a server-side apply under opts.
func (a *answerlessApplier) apply(ctx context.Context, u *unstructured.Unstructured, opts *client.ApplyOptions) error {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("map %s: %w", gvk, err)
	}
	rc, err := a.client(gvk)
	if err != nil {
		return err
	}
	body, err := json.Marshal(u.Object)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", gvk.Kind, u.GetName(), err)
	}
	req := rc.Patch(types.ApplyPatchType).Resource(mapping.Resource.Resource).Name(u.GetName()).
		VersionedParams(opts.AsPatchOptions(), metav1.ParameterCodec).Body(body)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		req = req.Namespace(u.GetNamespace())
	}
	return req.Do(ctx).Error()
}

// client is the REST client of gvk: typed (protobuf for built-in kinds)
// where the scheme knows the kind, unstructured (JSON) where it does not
// (cert-manager's Certificate, the Prometheus operator's PodMonitor).
func (a *answerlessApplier) client(gvk schema.GroupVersionKind) (rest.Interface, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rc, ok := a.clients[gvk]; ok {
		return rc, nil
	}
	rc, err := apiutil.RESTClientForGVK(gvk, false, !a.scheme.Recognizes(gvk), a.cfg, a.codecs, a.httpClient)
	if err != nil {
		return nil, fmt.Errorf("REST client for %s: %w", gvk, err)
	}
	a.clients[gvk] = rc
	return rc, nil
}
