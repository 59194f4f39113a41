package controllers

import (
	"context"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// IndexEnginePods registers the cache's index of engine pods by program
// on mgr (before it starts), as SetupWithManager does.
func IndexEnginePods(ctx context.Context, mgr ctrl.Manager) error { return indexEnginePods(ctx, mgr) }

// OwnObjectsClient is the reconcilers' client over mgr's cache (indexed
// with IndexEnginePods), with the operator's Secrets of namespace
// watched; it returns once that watch has listed them, so that its lists
// are answered from the indexes rather than from the API server.
func OwnObjectsClient(ctx context.Context, mgr ctrl.Manager, namespace string) (client.Client, error) {
	c, err := ReconcilerClient(mgr)
	if err != nil {
		return nil, err
	}
	secrets, err := newWorldSecrets(mgr.GetConfig())
	if err != nil {
		return nil, err
	}
	secrets.ctx = ctx
	secrets.watch("indexed-lists", namespace)
	for deadline := time.Now().Add(10 * time.Second); secrets.informer(namespace) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the Secrets of %s were not listed in 10s", namespace)
		}
	}
	return &ownObjectsClient{Client: c, secrets: secrets}, nil
}
