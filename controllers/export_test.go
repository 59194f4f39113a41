package controllers

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// staleReader answers its first Get with NotFound, as a read made just
// before another writer created the object, then reads from c.
type staleReader struct {
	client.Reader
	once sync.Once
}

func (s *staleReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	stale := false
	s.once.Do(func() { stale = true })
	if stale {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	return s.Reader.Get(ctx, key, obj, opts...)
}

// ReconcileClientTokenAfterStaleRead runs reconcileClientToken for client
// name of p with c (a real API server) as if its Secret had been created
// by another writer between the API read and the create; it returns the
// token hash that would go into the clients file.
func ReconcileClientTokenAfterStaleRead(ctx context.Context, c client.Client, scheme *runtime.Scheme, p *wellbeingv1alpha1.MeditationProgram, name string) (string, error) {
	r := &MeditationProgramReconciler{Client: c, Scheme: scheme, Clock: clock.RealClock{}}
	a := &childApplier{client: c, scheme: scheme, reader: c}
	for _, ac := range p.Spec.Access.Clients {
		if ac.Name == name {
			t, err := r.reconcileClientToken(ctx, a, &staleReader{Reader: c}, p, ac, r.Clock.Now(), 0)
			return t.hash, err
		}
	}
	return "", nil
}
