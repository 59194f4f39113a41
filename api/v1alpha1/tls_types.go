package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorldTLS is who signs the engines' serving certificates (docs/tls.md).
type WorldTLS struct {
	// issuerRef names a cert-manager Issuer or ClusterIssuer that signs
	// the engines' serving certificates: the operator then creates one
	// cert-manager Certificate per program instead of issuing from its own
	// CA. cert-manager must be installed. Default (unset): the operator's
	// own CA for the world, in the Secret attune-ca of its namespace.
	// +optional
	IssuerRef *CertificateIssuerReference `json:"issuerRef,omitempty"`
}

// CertificateIssuerReference names a cert-manager issuer, as a
// cert-manager Certificate's spec.issuerRef does.
type CertificateIssuerReference struct {
	// name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// kind is Issuer (in the world's namespace) or ClusterIssuer.
	// Default Issuer.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	Kind string `json:"kind,omitempty"`

	// group is the issuer's API group: cert-manager.io for cert-manager's
	// own issuers, another for an external issuer. Default cert-manager.io.
	// +optional
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Group string `json:"group,omitempty"`
}

// ProgramTLSStatus says how to verify the program's engines.
type ProgramTLSStatus struct {
	// secretName is the engines' serving certificate Secret (tls.crt,
	// tls.key, ca.crt) in the program's namespace.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// caBundle is the ConfigMap key, in the program's namespace, holding
	// the PEM bundle of the CAs that sign the engines' certificates:
	// what clients trust to reach the engines over HTTPS.
	// +optional
	CABundle *ConfigMapKeyReference `json:"caBundle,omitempty"`

	// notAfter is when the serving certificate in the Secret expires.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`

	// renewalTime is when it is renewed: 2/3 through its lifetime with the
	// operator's CA (cert-manager's default); with an issuerRef,
	// cert-manager decides and this is the same estimate.
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`
}

// ConfigMapKeyReference is one key of a ConfigMap in the same namespace.
type ConfigMapKeyReference struct {
	// name of the ConfigMap.
	// +required
	Name string `json:"name"`
	// key in the ConfigMap's data.
	// +required
	Key string `json:"key"`
}
