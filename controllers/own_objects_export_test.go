package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	secrets.watch(OwnSecretsWorld, namespace)
	for deadline := time.Now().Add(10 * time.Second); secrets.informer(namespace) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the Secrets of %s were not listed in 10s", namespace)
		}
	}
	return newOwnObjectsClient(mgr, c, secrets), nil
}

// OwnSecretsWorld is the world name OwnObjectsClient watches its
// namespace's Secrets under.
const OwnSecretsWorld = "indexed-lists"

// RememberCreatedSecret records s as the reconcilers' client (one from
// OwnObjectsClient) does after creating it.
func RememberCreatedSecret(c client.Client, s *corev1.Secret) {
	c.(*ownObjectsClient).secrets.remember(s)
}

// ForgetWorldSecrets stops the watch of world's Secrets, as the removal
// of a world does.
func ForgetWorldSecrets(c client.Client, world string) { c.(*ownObjectsClient).secrets.forget(world) }

// LacksOwnSecret is what the client knows of key without asking.
func LacksOwnSecret(c client.Client, key client.ObjectKey) bool {
	return c.(*ownObjectsClient).lacksOwnSecret(key)
}

// GetGeneratedSecret reads a generated Secret as the reconcilers do.
func GetGeneratedSecret(ctx context.Context, c client.Client, key client.ObjectKey, s *corev1.Secret) error {
	return getGeneratedSecret(ctx, c, key, s)
}
