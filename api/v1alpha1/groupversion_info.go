// Package v1alpha1 contains the wellbeing.attune.io/v1alpha1 API: VirtualWorld
// (a tenant) and MeditationProgram (an attention-meditation program served by
// GPU-backed engines). It holds types only; behaviour lives in controllers/.
//
// +kubebuilder:object:generate=true
// +groupName=wellbeing.attune.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "wellbeing.attune.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API types with a runtime.Scheme. It is
	// apimachinery's, so that importing the API pulls in no controller code.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&VirtualWorld{}, &VirtualWorldList{},
		&MeditationProgram{}, &MeditationProgramList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
