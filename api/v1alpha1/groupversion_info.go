// Package v1alpha1 contains the wellbeing.attune.io/v1alpha1 API: VirtualWorld
// (a tenant) and MeditationProgram (an attention-meditation program served by
// GPU-backed engines). It holds types only; behaviour lives in controllers/.
//
// +kubebuilder:object:generate=true
// +groupName=wellbeing.attune.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "wellbeing.attune.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
