package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/internal/pki"
)

// The engines serve HTTPS only (docs/tls.md). By default the operator runs
// one CA per world, in the world's namespace, and issues each program's
// serving certificate from it; a world's spec.tls.issuerRef hands the
// serving certificates to cert-manager instead. Either way the serving
// certificate is the Secret <program>-engine-tls (tls.crt, tls.key,
// ca.crt, as cert-manager writes it) and the CAs that verify it are
// published in the ConfigMap attune-ca-bundle (a CA certificate is public).
const (
	// CASecretName is the world's CA (kubernetes.io/tls: tls.crt and
	// tls.key are the current CA, ca.crt the bundle of it and the CAs it
	// replaced that are still valid).
	CASecretName = "attune-ca"
	// CABundleConfigMapName is where clients find the world's CA bundle,
	// under CABundleKey.
	CABundleConfigMapName = "attune-ca-bundle"
	CABundleKey           = "ca.crt"
	// CertManagerGroup is cert-manager's API group, the default of
	// spec.tls.issuerRef.group.
	CertManagerGroup = "cert-manager.io"
	tlsMountPath     = "/etc/attune/tls"
	// servingRecheck is how often a serving certificate that cert-manager
	// has not issued yet, or whose CA may have changed, is looked at
	// again: cert-manager's Secrets are not the operator's to watch.
	servingRecheck = 30 * time.Second
	// certManagerRefresh re-reads an issued cert-manager Secret's ca.crt
	// into the bundle at least this often.
	certManagerRefresh = time.Hour
)

// certificateGVK is cert-manager's Certificate, handled as unstructured so
// that the operator does not import cert-manager.
var certificateGVK = schema.GroupVersionKind{Group: CertManagerGroup, Version: "v1", Kind: "Certificate"}

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete

// engineTLSSecretName is the program's serving certificate Secret.
func engineTLSSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-tls"
}

// EngineDNSNames are the names of the program's Service that its serving
// certificate carries, shortest first.
func EngineDNSNames(p *wellbeingv1alpha1.MeditationProgram) []string {
	svc := engineName(p)
	return []string{svc, svc + "." + p.Namespace, svc + "." + p.Namespace + ".svc", svc + "." + p.Namespace + ".svc.cluster.local"}
}

// EngineServerName is the name the operator verifies the engines'
// certificates for (it reaches them by pod IP).
func EngineServerName(p *wellbeingv1alpha1.MeditationProgram) string {
	return engineName(p) + "." + p.Namespace + ".svc"
}

func issuerRef(w *wellbeingv1alpha1.VirtualWorld) *wellbeingv1alpha1.CertificateIssuerReference {
	if w.Spec.TLS == nil {
		return nil
	}
	return w.Spec.TLS.IssuerRef
}

// reconcileCertificateAuthority keeps the world's CA and its published
// bundle, unless cert-manager signs the world's certificates. The CA is
// re-issued when 2/3 of its lifetime has passed (or when its Secret no
// longer holds a usable CA); the CAs it replaces stay in the bundle until
// they expire, so that serving certificates they signed stay trusted, and
// each program's serving certificate moves to the new CA at its own
// renewal, by when clients have had weeks to pick up the new bundle.
func (r *VirtualWorldReconciler) reconcileCertificateAuthority(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	if issuerRef(rc.world) != nil {
		return nil // the programs publish cert-manager's CA (reconcileServingCertificate)
	}
	now := r.Clock.Now()
	ns := rc.world.Spec.Namespace
	existing := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: CASecretName}, existing)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get Secret %s: %w", CASecretName, err)
	}
	current := pki.KeyPair{CertPEM: existing.Data[corev1.TLSCertKey], KeyPEM: existing.Data[corev1.TLSPrivateKeyKey]}
	previous := existing.Data[CABundleKey]
	if _, err := pki.ParseCertificates(previous); err != nil {
		previous = nil
	}
	caCert, usable := usableCA(current, now)
	if !usable || !now.Before(pki.RenewalTime(caCert)) {
		if previous == nil && caCert != nil {
			previous = current.CertPEM
		}
		if current, err = pki.NewCA("attune-ca "+rc.world.Name, now, pki.CAValidity); err != nil {
			return err
		}
		if caCert, err = current.Certificate(); err != nil {
			return err
		}
	}
	bundle, err := pki.Bundle(current.CertPEM, previous, now)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: ns, Labels: worldLabels(rc.world)},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: current.CertPEM, corev1.TLSPrivateKeyKey: current.KeyPEM, CABundleKey: bundle},
	}
	if err := writeIssuedSecret(ctx, a, rc.world, existing, secret); err != nil {
		return err
	}
	if err := a.apply(ctx, rc.world, caBundleConfigMap(rc.world, bundle)); err != nil {
		return err
	}
	rc.requeueAfter = minPositive(rc.requeueAfter, pki.RenewalTime(caCert).Sub(now))
	return nil
}

// usableCA parses the CA key pair: a CA certificate valid at now whose key
// matches.
func usableCA(k pki.KeyPair, now time.Time) (*x509.Certificate, bool) {
	if len(k.CertPEM) == 0 {
		return nil, false
	}
	c, err := k.Certificate()
	if err != nil {
		return nil, false
	}
	if !c.IsCA || now.After(c.NotAfter) {
		return c, false
	}
	if _, err := tls.X509KeyPair(k.CertPEM, k.KeyPEM); err != nil {
		return c, false // the key does not match
	}
	return c, true
}

func caBundleConfigMap(w *wellbeingv1alpha1.VirtualWorld, bundle []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: CABundleConfigMapName, Namespace: w.Spec.Namespace, Labels: worldLabels(w)},
		Data:       map[string]string{CABundleKey: string(bundle)},
	}
}

// reconcileServingCertificate makes the program's serving certificate:
// issued from the world's CA, or requested from cert-manager. It records
// where clients find the CA bundle in the status. The Secret is mounted
// as a directory and the engines re-read it, so a renewal never rolls the
// pods (nothing of it enters the configuration hash).
func (r *MeditationProgramReconciler) reconcileServingCertificate(ctx context.Context, a *childApplier, rc *programReconcile) error {
	if ref := issuerRef(rc.world); ref != nil {
		return r.reconcileCertManagerCertificate(ctx, a, rc, ref)
	}
	now := r.Clock.Now()
	p := rc.program
	ca := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: CASecretName}, ca); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get the world's CA: %w", err)
		}
		rc.certificateProblem = fmt.Sprintf("the world's CA Secret %s/%s does not exist yet", p.Namespace, CASecretName)
		rc.requeueAfter = minPositive(rc.requeueAfter, servingRecheck)
		return nil
	}
	caPair := pki.KeyPair{CertPEM: ca.Data[corev1.TLSCertKey], KeyPEM: ca.Data[corev1.TLSPrivateKeyKey]}
	bundle := ca.Data[CABundleKey]
	if !r.certificateChecks.usableCA(caPair, now) || len(bundle) == 0 {
		rc.certificateProblem = fmt.Sprintf("the world's CA Secret %s/%s holds no usable CA", p.Namespace, CASecretName)
		rc.requeueAfter = minPositive(rc.requeueAfter, servingRecheck)
		return nil
	}

	// As for the generated Secrets (getGeneratedSecret), one the operator
	// knows it has not is taken as absent without a read. One there all
	// the same, outside the operator's watch (planted, or its labels
	// removed), fails the create with AlreadyExists and is then read and
	// judged.
	key := client.ObjectKey{Namespace: p.Namespace, Name: engineTLSSecretName(p)}
	existing := &corev1.Secret{}
	if err := getGeneratedSecret(ctx, r.Client, key, existing); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get Secret %s: %w", key.Name, err)
	}
	err := r.writeServingSecret(ctx, a, rc, caPair, bundle, existing, now)
	if existing.ResourceVersion == "" && apierrors.IsAlreadyExists(err) {
		existing = &corev1.Secret{}
		if err := a.apiReader().Get(ctx, key, existing); err != nil {
			return fmt.Errorf("get Secret %s after its create found it there: %w", key.Name, err)
		}
		err = r.writeServingSecret(ctx, a, rc, caPair, bundle, existing, now)
	}
	return err
}

// writeServingSecret makes the program's serving certificate Secret hold a
// certificate from caPair that is sound and not due for renewal, keeping
// the one in existing (empty: none) when it is, and records its validity
// in the status.
func (r *MeditationProgramReconciler) writeServingSecret(ctx context.Context, a *childApplier, rc *programReconcile, caPair pki.KeyPair, bundle []byte, existing *corev1.Secret, now time.Time) error {
	p := rc.program
	if err := r.dropCertManagerCertificate(ctx, a, existing, p); err != nil {
		return err
	}
	serving := pki.KeyPair{CertPEM: existing.Data[corev1.TLSCertKey], KeyPEM: existing.Data[corev1.TLSPrivateKeyKey]}
	validity, due := r.certificateChecks.servingDue(serving, bundle, EngineDNSNames(p), now)
	if due {
		var err error
		if serving, err = pki.IssueServing(caPair, EngineDNSNames(p), now, pki.ServingValidity); err != nil {
			return err
		}
		leaf, err := serving.Certificate()
		if err != nil {
			return err
		}
		validity = checkedCertificate{sound: true, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: engineTLSSecretName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: serving.CertPEM, corev1.TLSPrivateKeyKey: serving.KeyPEM, CABundleKey: bundle},
	}
	if err := writeIssuedSecret(ctx, a, p, existing, secret); err != nil {
		return err
	}
	renewal := pki.RenewalBetween(validity.notBefore, validity.notAfter)
	rc.status.TLS = tlsStatus(p, validity.notAfter, renewal)
	// Also look again soon: the CA may be replaced (its bundle then
	// changes, and the Secret's ca.crt follows).
	rc.requeueAfter = minPositive(rc.requeueAfter, max(renewal.Sub(now), time.Second))
	return nil
}

// servingSound parses the program's serving certificate and says whether
// it passes the checks that do not depend on the time: present, parsed, a
// key that matches, the Service's names, verified by the world's bundle
// (not so when the CA was replaced outside the operator). Renewal at 2/3
// of its lifetime is certificateChecks.servingDue's.
func servingSound(k pki.KeyPair, bundle []byte, names []string) (*x509.Certificate, bool) {
	if len(k.CertPEM) == 0 || len(k.KeyPEM) == 0 {
		return nil, false
	}
	leaf, err := k.Certificate()
	if err != nil {
		return nil, false
	}
	if _, err := tls.X509KeyPair(k.CertPEM, k.KeyPEM); err != nil {
		return leaf, false
	}
	if len(leaf.DNSNames) != len(names) {
		return leaf, false
	}
	for _, n := range names {
		// Verify at the certificate's own start, so that a certificate
		// issued by a clock a little ahead is not re-issued in a loop.
		if err := pki.Verify(leaf, bundle, n, leaf.NotBefore.Add(time.Second)); err != nil {
			return leaf, false
		}
	}
	return leaf, true
}

func tlsStatus(p *wellbeingv1alpha1.MeditationProgram, notAfter, renewal time.Time) *wellbeingv1alpha1.ProgramTLSStatus {
	return &wellbeingv1alpha1.ProgramTLSStatus{
		SecretName:  engineTLSSecretName(p),
		CABundle:    &wellbeingv1alpha1.ConfigMapKeyReference{Name: CABundleConfigMapName, Key: CABundleKey},
		NotAfter:    &metav1.Time{Time: notAfter.UTC().Truncate(time.Second)},
		RenewalTime: &metav1.Time{Time: renewal.UTC().Truncate(time.Second)},
	}
}

// EngineCertificate is the cert-manager Certificate of a program's
// serving certificate: the Service's names, cert-manager's default
// duration and renewal (90 days, renewed at 2/3) spelled out, a new
// ECDSA P-256 key at every renewal, and the operator's labels on the
// Secret so that it is recognised as the program's.
func EngineCertificate(p *wellbeingv1alpha1.MeditationProgram, ref *wellbeingv1alpha1.CertificateIssuerReference) *unstructured.Unstructured {
	kind, group := ref.Kind, ref.Group
	if kind == "" {
		kind = "Issuer"
	}
	if group == "" {
		group = CertManagerGroup
	}
	names := make([]any, 0, 4)
	for _, n := range EngineDNSNames(p) {
		names = append(names, n)
	}
	labels := map[string]any{}
	for k, v := range engineLabels(p) {
		labels[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"secretName":     engineTLSSecretName(p),
			"secretTemplate": map[string]any{"labels": labels},
			"dnsNames":       names,
			"duration":       pki.ServingValidity.String(),
			"renewBefore":    (pki.ServingValidity / 3).String(),
			"usages":         []any{"digital signature", "server auth"},
			"privateKey":     map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always", "encoding": "PKCS8"},
			"issuerRef":      map[string]any{"name": ref.Name, "kind": kind, "group": group},
		},
	}}
	u.SetGroupVersionKind(certificateGVK)
	u.SetName(engineName(p))
	u.SetNamespace(p.Namespace)
	u.SetLabels(engineLabels(p))
	return u
}

// reconcileCertManagerCertificate applies the program's Certificate and,
// once cert-manager has written the Secret, merges its ca.crt into the
// world's bundle (every program of the world has the same issuer; during
// a change of the issuer's CA the bundle holds both).
func (r *MeditationProgramReconciler) reconcileCertManagerCertificate(ctx context.Context, a *childApplier, rc *programReconcile, ref *wellbeingv1alpha1.CertificateIssuerReference) error {
	p := rc.program
	desired := EngineCertificate(p, ref)
	if err := controllerutil.SetControllerReference(p, desired, r.Scheme); err != nil {
		return fmt.Errorf("set owner of Certificate %s: %w", desired.GetName(), err)
	}
	existing := &unstructured.Unstructured{}
	existing.SetGroupVersionKind(certificateGVK)
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case meta.IsNoMatchError(err):
		rc.certificateProblem = fmt.Sprintf("spec.tls.issuerRef of VirtualWorld %s names a cert-manager issuer, but cert-manager's Certificate API (cert-manager.io/v1) is not installed", rc.world.Name)
		rc.requeueAfter = minPositive(rc.requeueAfter, servingRecheck)
		return nil
	case err == nil && isSubset(desired.Object["spec"], existing.Object["spec"]):
	case err == nil || apierrors.IsNotFound(err):
		if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply Certificate %s: %w", desired.GetName(), err)
		}
		a.changes = append(a.changes, "Applied Certificate "+desired.GetName())
	default:
		return fmt.Errorf("get Certificate %s: %w", desired.GetName(), err)
	}

	secret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: engineTLSSecretName(p)}, secret); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get Secret %s: %w", engineTLSSecretName(p), err)
	}
	// A missing Secret has no data: both parses fail.
	leaf, leafErr := pki.KeyPair{CertPEM: secret.Data[corev1.TLSCertKey]}.Certificate()
	caPEM := secret.Data[CABundleKey]
	_, caErr := pki.ParseCertificates(caPEM)
	if issued := leafErr == nil && caErr == nil; !issued {
		rc.certificateProblem = fmt.Sprintf("waiting for cert-manager to issue Certificate %s (Secret %s with tls.crt and ca.crt)", desired.GetName(), engineTLSSecretName(p))
		rc.requeueAfter = minPositive(rc.requeueAfter, servingRecheck)
		return nil
	}
	if err := r.mergeBundle(ctx, rc.world, caPEM); err != nil {
		return err
	}
	rc.status.TLS = tlsStatus(p, leaf.NotAfter, pki.RenewalTime(leaf))
	rc.requeueAfter = minPositive(rc.requeueAfter, certManagerRefresh)
	return nil
}

// mergeBundle adds caPEM to the world's bundle ConfigMap (creating it,
// owned by the world), dropping expired CAs; a concurrent change by
// another program's reconcile is a conflict, retried by the queue.
func (r *MeditationProgramReconciler) mergeBundle(ctx context.Context, w *wellbeingv1alpha1.VirtualWorld, caPEM []byte) error {
	now := r.Clock.Now()
	cm := &corev1.ConfigMap{}
	err := r.Get(ctx, client.ObjectKey{Namespace: w.Spec.Namespace, Name: CABundleConfigMapName}, cm)
	if apierrors.IsNotFound(err) {
		bundle, err := pki.Bundle(caPEM, nil, now)
		if err != nil {
			return err
		}
		created := caBundleConfigMap(w, bundle)
		if err := controllerutil.SetControllerReference(w, created, r.Scheme); err != nil {
			return fmt.Errorf("set owner of ConfigMap %s: %w", CABundleConfigMapName, err)
		}
		if err := r.Create(ctx, created, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("create ConfigMap %s: %w", CABundleConfigMapName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get ConfigMap %s: %w", CABundleConfigMapName, err)
	}
	bundle, err := pki.Bundle(caPEM, []byte(cm.Data[CABundleKey]), now)
	if err != nil {
		// An unreadable bundle is replaced by this program's CA.
		if bundle, err = pki.Bundle(caPEM, nil, now); err != nil {
			return err
		}
	}
	if samePEMSet(bundle, []byte(cm.Data[CABundleKey])) {
		return nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CABundleKey] = string(bundle)
	if err := r.Update(ctx, cm, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("update ConfigMap %s: %w", CABundleConfigMapName, err)
	}
	return nil
}

// samePEMSet reports whether two bundles hold the same certificates, in
// any order (programs adding the same CA in turn must not rewrite it).
func samePEMSet(a, b []byte) bool {
	ca, errA := pki.ParseCertificates(a)
	cb, errB := pki.ParseCertificates(b)
	if errA != nil || errB != nil || len(ca) != len(cb) {
		return false
	}
	for _, x := range ca {
		found := false
		for _, y := range cb {
			if x.Equal(y) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// EngineTrust is how a client in the cluster verifies a program's
// engines, the operator among them: the world's CA bundle (the ConfigMap
// published for every client), for the Service's name, whatever address
// it dials (a pod IP, a port-forward).
func EngineTrust(ctx context.Context, c client.Reader, p *wellbeingv1alpha1.MeditationProgram) ([]engineclient.Option, error) {
	bundle, err := worldBundle(ctx, c, p)
	if err != nil {
		return nil, err
	}
	return []engineclient.Option{engineclient.WithCABundle(bundle), engineclient.WithServerName(EngineServerName(p))}, nil
}

// worldBundle is the CA bundle of p's world, checked to hold certificates.
func worldBundle(ctx context.Context, c client.Reader, p *wellbeingv1alpha1.MeditationProgram) ([]byte, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: CABundleConfigMapName}, cm); err != nil {
		return nil, unavailable("read the world's CA bundle (ConfigMap %s): %v", CABundleConfigMapName, err)
	}
	bundle := []byte(cm.Data[CABundleKey])
	if _, err := pki.ParseCertificates(bundle); err != nil {
		return nil, unavailable("the world's CA bundle (ConfigMap %s, key %s): %v", CABundleConfigMapName, CABundleKey, err)
	}
	return bundle, nil
}

// untrusted is the measurement's error when no engine answered and at
// least one presented a certificate the world's bundle does not verify:
// an impostor, or a certificate from another CA.
func untrusted(answers []engineAnswer) error {
	var refused []string
	for _, a := range answers {
		if a.err == nil {
			return nil
		}
		if isCertificateRefusal(a.err) {
			refused = append(refused, a.err.Error())
		}
	}
	if len(refused) == 0 {
		return nil
	}
	return &MeasurementError{Reason: wellbeingv1alpha1.ReasonEngineCertificateUntrusted, Message: fmt.Sprintf(
		"%d of %d engines presented a certificate that the world's CA bundle (ConfigMap %s) does not verify: %s",
		len(refused), len(answers), CABundleConfigMapName, strings.Join(refused, "; "))}
}

func isCertificateRefusal(err error) bool {
	var verification *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verification) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// writeIssuedSecret writes a Secret holding a key the operator generated
// over the version it read (existing; empty when there was none): a
// create, or an update conditional on that version, so that a key pair
// issued by another reconcile in the meantime is never overwritten by one
// decided on older data (the conflict is retried from a fresh read).
// Unchanged data costs no write.
func writeIssuedSecret(ctx context.Context, a *childApplier, owner client.Object, existing, desired *corev1.Secret) error {
	if err := controllerutil.SetControllerReference(owner, desired, a.scheme); err != nil {
		return fmt.Errorf("set owner of Secret %s: %w", desired.Name, err)
	}
	if existing.ResourceVersion == "" {
		if err := a.client.Create(ctx, desired, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("create Secret %s: %w", desired.Name, err)
		}
		a.changes = append(a.changes, "Created Secret "+desired.Name)
		return nil
	}
	if existing.Type == desired.Type && equality.Semantic.DeepEqual(existing.Data, desired.Data) &&
		hasLabels(existing.Labels, desired.Labels) && metav1.IsControlledBy(existing, owner) {
		return nil
	}
	if existing.Type != desired.Type {
		return fmt.Errorf("secret %s has type %s, want %s: delete it and the operator issues it again", desired.Name, existing.Type, desired.Type)
	}
	desired.ResourceVersion = existing.ResourceVersion
	if err := a.client.Update(ctx, desired, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("update Secret %s: %w", desired.Name, err)
	}
	a.changes = append(a.changes, "Updated Secret "+desired.Name)
	return nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// certManagerCertificateAnnotation is what cert-manager writes on the
// Secrets it issues: the Certificate's name.
const certManagerCertificateAnnotation = "cert-manager.io/certificate-name"

// dropCertManagerCertificate deletes the program's cert-manager
// Certificate after the world's spec.tls.issuerRef was removed (its
// Secret, still cert-manager's, says so), so that cert-manager stops
// writing the Secret the operator now issues (the world's bundle then
// holds the operator's CA only: until the kubelet has written the new
// certificate into the pods, about a minute, clients refuse the engines).
func (r *MeditationProgramReconciler) dropCertManagerCertificate(ctx context.Context, a *childApplier, secret *corev1.Secret, p *wellbeingv1alpha1.MeditationProgram) error {
	if secret.Annotations[certManagerCertificateAnnotation] != engineName(p) {
		return nil
	}
	cert := &unstructured.Unstructured{}
	cert.SetGroupVersionKind(certificateGVK)
	cert.SetNamespace(p.Namespace)
	cert.SetName(engineName(p))
	if err := r.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil
		}
		return fmt.Errorf("get Certificate %s: %w", cert.GetName(), err)
	}
	if !metav1.IsControlledBy(cert, p) {
		return nil // not ours: leave it
	}
	if err := r.Delete(ctx, cert); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Certificate %s: %w", cert.GetName(), err)
	}
	a.changes = append(a.changes, "Deleted Certificate "+cert.GetName())
	return nil
}

// programsOfBundle maps the world's CA bundle ConfigMap to the programs of
// its namespace: a program created with its world waits for the CA no
// longer than the CA takes to appear.
func (r *MeditationProgramReconciler) programsOfBundle(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetName() != CABundleConfigMapName {
		return nil
	}
	programs := &wellbeingv1alpha1.MeditationProgramList{}
	if err := r.List(ctx, programs, client.InNamespace(obj.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list programs of a CA bundle", "namespace", obj.GetNamespace())
		return nil
	}
	requests := make([]reconcile.Request, 0, len(programs.Items))
	for _, p := range programs.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return requests
}
