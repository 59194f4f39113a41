package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configure the reconcilers.
type Options struct {
	OperatorNamespace       string
	EngineImage             string
	MaxConcurrentReconciles int
	Clock                   clock.PassiveClock
}

// CacheOptions limits the operator's cache to the objects it manages, so
// that it neither holds every Secret of the cluster in memory nor needs to,
// and drops managed fields (which the operator never reads; they are the
// larger part of an applied Deployment) before objects enter it.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})}
	enginePods := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelName: EngineAppName})}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Namespace{}:             managed,
		&corev1.Secret{}:                managed,
		&corev1.ConfigMap{}:             managed,
		&corev1.ServiceAccount{}:        managed,
		&corev1.Service{}:               managed,
		&corev1.ResourceQuota{}:         managed,
		&corev1.PersistentVolumeClaim{}: managed,
		&appsv1.Deployment{}:            managed,
		&policyv1.PodDisruptionBudget{}: managed,
		&networkingv1.NetworkPolicy{}:   managed,
		&corev1.Pod{}:                   enginePods,
	}}
}

// SetupWithManager registers both reconcilers and their shared index.
func SetupWithManager(mgr ctrl.Manager, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if err := IndexWorldRef(context.Background(), mgr); err != nil {
		return fmt.Errorf("index programs by world: %w", err)
	}
	world := &VirtualWorldReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("attune-virtualworld"), Clock: o.Clock, OperatorNamespace: o.OperatorNamespace,
	}
	if err := world.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up VirtualWorld controller: %w", err)
	}
	program := &MeditationProgramReconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorder("attune-meditationprogram"),
		Clock: o.Clock, EngineImage: o.EngineImage, MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		APIReader: mgr.GetAPIReader(),
	}
	if err := program.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MeditationProgram controller: %w", err)
	}
	return nil
}
