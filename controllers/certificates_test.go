package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/internal/pki"
)

// engineTrust is what a client in the cluster uses to reach a program's
// engines: the world's published CA bundle, and the Service's name (the
// tests dial pod addresses on loopback).
func engineTrust(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) []engineclient.Option {
	t.Helper()
	bundle := caBundle(t, p.Namespace)
	return []engineclient.Option{engineclient.WithCABundle(bundle), engineclient.WithServerName(controllers.EngineServerName(p))}
}

// caBundle waits for the world's CA bundle ConfigMap and returns it.
func caBundle(t *testing.T, namespace string) []byte {
	t.Helper()
	cm := &corev1.ConfigMap{}
	eventually(t, "the world's CA bundle", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: controllers.CABundleConfigMapName}, cm); err != nil {
			return err
		}
		_, err := pki.ParseCertificates([]byte(cm.Data[controllers.CABundleKey]))
		return err
	})
	return []byte(cm.Data[controllers.CABundleKey])
}

func secretOf(t *testing.T, namespace, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	eventually(t, "Secret "+name, func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, s)
	})
	return s
}

func leafOf(t *testing.T, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	c, err := pki.KeyPair{CertPEM: s.Data[corev1.TLSCertKey]}.Certificate()
	if err != nil {
		t.Fatalf("Secret %s: %v", s.Name, err)
	}
	return c
}

// TestWorldCAAndServingCertificate: a world gets its CA and a published
// bundle; each program a serving certificate for its Service's names,
// mounted into the engines, which serve and are probed over HTTPS; the
// status names the bundle.
func TestWorldCAAndServingCertificate(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("tls-default", "tls-default", wellbeingv1alpha1.ContextSocial))
	p := newProgram("tls-default", "calm", "tls-default")
	create(t, p)

	ca := secretOf(t, "tls-default", controllers.CASecretName)
	if ca.Type != corev1.SecretTypeTLS {
		t.Errorf("CA Secret type %s, want %s", ca.Type, corev1.SecretTypeTLS)
	}
	caCert := leafOf(t, ca)
	if !caCert.IsCA || caCert.NotAfter.Sub(caCert.NotBefore) < 4*365*24*time.Hour {
		t.Errorf("CA: IsCA=%v, valid %s", caCert.IsCA, caCert.NotAfter.Sub(caCert.NotBefore))
	}
	bundle := caBundle(t, "tls-default")
	if string(bundle) != string(ca.Data[controllers.CABundleKey]) {
		t.Error("the published bundle is not the CA Secret's ca.crt")
	}

	serving := secretOf(t, "tls-default", "calm-engine-tls")
	leaf := leafOf(t, serving)
	want := []string{"calm-engine", "calm-engine.tls-default", "calm-engine.tls-default.svc", "calm-engine.tls-default.svc.cluster.local"}
	if !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("serving DNS names %v, want %v", leaf.DNSNames, want)
	}
	for _, name := range want {
		if err := pki.Verify(leaf, bundle, name, time.Now()); err != nil {
			t.Errorf("serving certificate for %s against the bundle: %v", name, err)
		}
	}
	if _, err := tls.X509KeyPair(serving.Data[corev1.TLSCertKey], serving.Data[corev1.TLSPrivateKeyKey]); err != nil {
		t.Errorf("serving key pair: %v", err)
	}
	if string(serving.Data[controllers.CABundleKey]) != string(bundle) {
		t.Error("the serving Secret's ca.crt is not the world's bundle")
	}
	if ref := metav1.GetControllerOf(serving); ref == nil || ref.Kind != "MeditationProgram" || ref.Name != "calm" {
		t.Errorf("serving Secret controller %+v, want the program", ref)
	}

	eventually(t, "status.tls", func() error {
		got := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(p), got)
		st := got.Status.TLS
		if st == nil || st.CABundle == nil || st.NotAfter == nil || st.RenewalTime == nil {
			return fmt.Errorf("status.tls %+v", st)
		}
		if st.SecretName != "calm-engine-tls" || st.CABundle.Name != controllers.CABundleConfigMapName || st.CABundle.Key != controllers.CABundleKey {
			return fmt.Errorf("status.tls names %s and %+v", st.SecretName, *st.CABundle)
		}
		if !st.NotAfter.Time.Equal(leaf.NotAfter.UTC().Truncate(time.Second)) {
			return fmt.Errorf("status.tls.notAfter %s, want %s", st.NotAfter, leaf.NotAfter)
		}
		return nil
	})

	d := &appsv1.Deployment{}
	eventually(t, "deployment", func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: "tls-default", Name: "calm-engine"}, d) })
	engine := d.Spec.Template.Spec.Containers[0]
	if engine.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || engine.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("probes use %s and %s, want HTTPS", engine.ReadinessProbe.HTTPGet.Scheme, engine.LivenessProbe.HTTPGet.Scheme)
	}
	mounted := false
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "calm-engine-tls" && len(v.Secret.Items) == 0 {
			mounted = true
		}
	}
	if !mounted || !slices.ContainsFunc(engine.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/etc/attune/tls" && m.SubPath == "" }) {
		t.Error("the serving Secret is not mounted as a directory at /etc/attune/tls")
	}
	cfg, _ := programEngineConfig(t, p)
	if cfg.TLS == nil || cfg.TLS.CertFile != "/etc/attune/tls/tls.crt" || cfg.TLS.KeyFile != "/etc/attune/tls/tls.key" {
		t.Errorf("engine tls %+v", cfg.TLS)
	}
	svc := &corev1.Service{}
	get(t, client.ObjectKey{Namespace: "tls-default", Name: "calm-engine"}, svc)
	if port := svc.Spec.Ports[0]; port.Name != "http" || port.AppProtocol == nil || *port.AppProtocol != "https" {
		t.Errorf("service port %s appProtocol %v, want http/https", port.Name, port.AppProtocol)
	}

	// A deleted serving Secret is issued again.
	if err := k8s.Delete(ctx, serving); err != nil {
		t.Fatal(err)
	}
	eventually(t, "serving Secret re-issued", func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(serving), s); err != nil {
			return err
		}
		if c, err := (pki.KeyPair{CertPEM: s.Data[corev1.TLSCertKey]}).Certificate(); err != nil || c.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			return fmt.Errorf("not re-issued (%v)", err)
		}
		return nil
	})
}

// directProgramReconciler is the program reconciler on a clock the test
// sets, called directly (the suite's operator runs on the wall clock).
func directProgramReconciler(clock *clocktesting.FakePassiveClock) *controllers.MeditationProgramReconciler {
	return &controllers.MeditationProgramReconciler{Client: k8s, APIReader: k8s, Scheme: scheme, Recorder: events.NewFakeRecorder(1000), Clock: clock, EngineImage: "example.test/engine:v1"}
}

// reconcileAt reconciles obj with r until it succeeds (the suite's operator
// writes the same status: a conflict is retried).
func reconcileAt(t *testing.T, r interface {
	Reconcile(context.Context, ctrl.Request) (ctrl.Result, error)
}, key client.ObjectKey) ctrl.Result {
	t.Helper()
	var err error
	for range 10 {
		var res ctrl.Result
		if res, err = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err == nil {
			return res
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("reconcile %s: %v", key, err)
	return ctrl.Result{}
}

// TestServingCertificateRenewsAtTwoThirdsWithoutRestart: the serving
// certificate is kept until 2/3 of its lifetime has passed, then issued
// anew; the reconcile asks to be run again at the renewal time; the
// engines' pod template does not change.
func TestServingCertificateRenewsAtTwoThirdsWithoutRestart(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("tls-renew", "tls-renew", wellbeingv1alpha1.ContextSocial))
	p := newProgram("tls-renew", "steady", "tls-renew")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	create(t, p)
	first := leafOf(t, secretOf(t, "tls-renew", "steady-engine-tls"))
	eventually(t, "deployment", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "tls-renew", Name: "steady-engine"}, &appsv1.Deployment{})
	})

	renewal := pki.RenewalTime(first)
	clock := clocktesting.NewFakePassiveClock(renewal.Add(-time.Minute))
	r := directProgramReconciler(clock)
	res := reconcileAt(t, r, client.ObjectKeyFromObject(p))
	before := &appsv1.Deployment{}
	get(t, client.ObjectKey{Namespace: "tls-renew", Name: "steady-engine"}, before)
	if kept := leafOf(t, secretOf(t, "tls-renew", "steady-engine-tls")); kept.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("re-issued before 2/3 of the lifetime")
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Errorf("requeue after %s, want at most the minute left to the renewal", res.RequeueAfter)
	}

	clock.SetTime(renewal.Add(time.Minute))
	reconcileAt(t, r, client.ObjectKeyFromObject(p))
	renewed := leafOf(t, secretOf(t, "tls-renew", "steady-engine-tls"))
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("not renewed after 2/3 of the lifetime")
	}
	if got := renewed.NotAfter.Sub(clock.Now()); got != pki.ServingValidity {
		t.Errorf("renewed certificate valid %s from the renewal, want %s", got, pki.ServingValidity)
	}
	if err := pki.Verify(renewed, caBundle(t, "tls-renew"), "steady-engine.tls-renew.svc", clock.Now()); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
	after := &appsv1.Deployment{}
	get(t, client.ObjectKeyFromObject(before), after)
	if !equality.Semantic.DeepEqual(before.Spec.Template, after.Spec.Template) {
		b, _ := json.Marshal(before.Spec.Template)
		a, _ := json.Marshal(after.Spec.Template)
		t.Errorf("the renewal changed the pod template (a restart):\nbefore %s\nafter  %s", b, a)
	}
	got := &wellbeingv1alpha1.MeditationProgram{}
	eventually(t, "status.tls follows the renewal", func() error {
		get(t, client.ObjectKeyFromObject(p), got)
		if st := got.Status.TLS; st == nil || st.NotAfter == nil || !st.NotAfter.Time.Equal(renewed.NotAfter.UTC().Truncate(time.Second)) {
			return fmt.Errorf("status.tls %+v, want notAfter %s", st, renewed.NotAfter)
		}
		return nil
	})
}

// TestCARotationKeepsThePreviousCAInTheBundle: at 2/3 of the CA's life a
// new CA signs; the old one stays in the published bundle, so engines
// still on a certificate it signed stay trusted, until their renewal
// moves them to the new CA.
func TestCARotationKeepsThePreviousCAInTheBundle(t *testing.T) {
	createWorld(t, newWorld("tls-rotate", "tls-rotate", wellbeingv1alpha1.ContextSocial))
	p := newProgram("tls-rotate", "lasting", "tls-rotate")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	create(t, p)
	oldCA := leafOf(t, secretOf(t, "tls-rotate", controllers.CASecretName))
	secretOf(t, "tls-rotate", "lasting-engine-tls")

	// A day before the CA's renewal the old CA issues the program's
	// current certificate (the one before has long expired by then).
	clock := clocktesting.NewFakePassiveClock(pki.RenewalTime(oldCA).Add(-24 * time.Hour))
	r := directProgramReconciler(clock)
	reconcileAt(t, r, client.ObjectKeyFromObject(p))
	oldLeaf := leafOf(t, secretOf(t, "tls-rotate", "lasting-engine-tls"))
	if err := oldLeaf.CheckSignatureFrom(oldCA); err != nil || !oldLeaf.NotBefore.After(pki.RenewalTime(oldCA).Add(-26*time.Hour)) {
		t.Fatalf("the serving certificate before the rotation: %v, from %s", err, oldLeaf.NotBefore)
	}

	clock.SetTime(pki.RenewalTime(oldCA).Add(time.Minute))
	world := &controllers.VirtualWorldReconciler{Client: k8s, APIReader: k8s, Scheme: scheme, Recorder: events.NewFakeRecorder(1000), Clock: clock}
	// The direct reconciler has no cache, so its last step (counting
	// programs through the cache's index) fails; the CA step before it
	// has run.
	_, _ = world.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: "tls-rotate"}})
	rotated := secretOf(t, "tls-rotate", controllers.CASecretName)
	newCA := leafOf(t, rotated)
	if newCA.Equal(oldCA) {
		t.Fatal("the CA was not rotated at 2/3 of its lifetime")
	}
	var published []*x509.Certificate
	eventually(t, "the bundle holds both CAs", func() error {
		var err error
		if published, err = pki.ParseCertificates(caBundle(t, "tls-rotate")); err != nil {
			return err
		}
		if len(published) != 2 || !published[0].Equal(newCA) || !published[1].Equal(oldCA) {
			return fmt.Errorf("%d CAs published, want the new then the old", len(published))
		}
		return nil
	})
	bundle := caBundle(t, "tls-rotate")
	if err := pki.Verify(oldLeaf, bundle, "lasting-engine.tls-rotate.svc", clock.Now()); err != nil {
		t.Errorf("the old CA's serving certificate after the rotation: %v", err)
	}

	// The program keeps its certificate (not due) and its Secret's
	// ca.crt follows the bundle; at its renewal the new CA signs it.
	reconcileAt(t, r, client.ObjectKeyFromObject(p))
	serving := secretOf(t, "tls-rotate", "lasting-engine-tls")
	if leafOf(t, serving).SerialNumber.Cmp(oldLeaf.SerialNumber) != 0 {
		t.Error("the CA's rotation re-issued a serving certificate that was not due")
	}
	if string(serving.Data[controllers.CABundleKey]) != string(bundle) {
		t.Error("the serving Secret's ca.crt does not follow the rotated bundle")
	}
	clock.SetTime(pki.RenewalTime(oldLeaf).Add(time.Minute))
	reconcileAt(t, r, client.ObjectKeyFromObject(p))
	renewed := leafOf(t, secretOf(t, "tls-rotate", "lasting-engine-tls"))
	if err := renewed.CheckSignatureFrom(newCA); err != nil {
		t.Errorf("the renewal after the rotation is not signed by the new CA: %v", err)
	}
}

// TestCertManagerCertificate: with spec.tls.issuerRef the operator renders
// a cert-manager Certificate, which the API server accepts against
// cert-manager's own CRD; once the Secret is issued (written here as
// cert-manager's CA issuer writes it: tls.crt, tls.key, ca.crt and its
// annotations, since no cert-manager runs on envtest) its ca.crt is
// published in the world's bundle and the status names it.
func TestCertManagerCertificate(t *testing.T) {
	ctx := context.Background()
	w := newWorld("tls-certmanager", "tls-certmanager", wellbeingv1alpha1.ContextSocial)
	w.Spec.TLS = &wellbeingv1alpha1.WorldTLS{IssuerRef: &wellbeingv1alpha1.CertificateIssuerReference{Name: "corp-ca", Kind: "ClusterIssuer"}}
	createWorld(t, w)
	p := newProgram("tls-certmanager", "managed", "tls-certmanager")
	create(t, p)

	cert := &unstructured.Unstructured{}
	cert.SetAPIVersion("cert-manager.io/v1")
	cert.SetKind("Certificate")
	eventually(t, "the Certificate", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "tls-certmanager", Name: "managed-engine"}, cert)
	})
	spec, _ := cert.Object["spec"].(map[string]any)
	wantSpec := map[string]any{
		"secretName":  "managed-engine-tls",
		"dnsNames":    []any{"managed-engine", "managed-engine.tls-certmanager", "managed-engine.tls-certmanager.svc", "managed-engine.tls-certmanager.svc.cluster.local"},
		"duration":    "2160h0m0s",
		"renewBefore": "720h0m0s",
		"usages":      []any{"digital signature", "server auth"},
		"privateKey":  map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always", "encoding": "PKCS8"},
		"issuerRef":   map[string]any{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
	}
	for k, v := range wantSpec {
		if !equality.Semantic.DeepEqual(spec[k], v) {
			t.Errorf("Certificate spec.%s = %#v, want %#v", k, spec[k], v)
		}
	}
	if labels, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "secretTemplate", "labels"); labels[controllers.LabelManagedBy] != controllers.ManagedByValue || labels[controllers.LabelProgram] != "managed" {
		t.Errorf("secretTemplate labels %v", labels)
	}
	if ref := metav1.GetControllerOf(cert); ref == nil || ref.Kind != "MeditationProgram" || ref.Name != "managed" {
		t.Errorf("Certificate controller %+v, want the program", ref)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "tls-certmanager", Name: controllers.CASecretName}, &corev1.Secret{}); err == nil {
		t.Error("the operator made its own CA although cert-manager signs this world's certificates")
	}
	eventually(t, "EngineAvailable says the certificate is pending", func() error {
		got := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(p), got)
		return conditionIs(got.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable, metav1.ConditionFalse, wellbeingv1alpha1.ReasonCertificatePending)
	})

	// cert-manager's CA issuer: the Secret of the Certificate.
	issuer, err := pki.NewCA("corp-ca", time.Now(), 24*time.Hour*365)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.IssueServing(issuer, controllers.EngineDNSNames(p), time.Now(), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "managed-engine-tls", Namespace: "tls-certmanager",
			Labels: map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelProgram: "managed"},
			Annotations: map[string]string{
				"cert-manager.io/certificate-name": "managed-engine", "cert-manager.io/issuer-name": "corp-ca",
				"cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-group": "cert-manager.io",
			}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: serving.CertPEM, corev1.TLSPrivateKeyKey: serving.KeyPEM, "ca.crt": issuer.CertPEM},
	})
	// The program is looked at again within servingRecheck (30s); an
	// annotation brings it sooner.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["test/poke"] = "1"
	})
	eventually(t, "cert-manager's CA in the bundle and the status", func() error {
		got := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(p), got)
		if st := got.Status.TLS; st == nil || st.CABundle == nil || st.CABundle.Name != controllers.CABundleConfigMapName || st.SecretName != "managed-engine-tls" {
			return fmt.Errorf("status.tls %+v", got.Status.TLS)
		}
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "tls-certmanager", Name: controllers.CABundleConfigMapName}, cm); err != nil {
			return err
		}
		if cm.Data[controllers.CABundleKey] != string(issuer.CertPEM) {
			return errors.New("the bundle is not cert-manager's CA")
		}
		return nil
	})

	// Without the issuerRef the operator's own CA takes over: the
	// Certificate goes (cert-manager would otherwise keep writing the
	// Secret) and the Secret is issued from the world's CA.
	updateSpec(t, w, func(w *wellbeingv1alpha1.VirtualWorld) { w.Spec.TLS = nil })
	eventually(t, "the operator's CA issues the serving certificate", func() error {
		gone := &unstructured.Unstructured{}
		gone.SetAPIVersion("cert-manager.io/v1")
		gone.SetKind("Certificate")
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "tls-certmanager", Name: "managed-engine"}, gone); err == nil {
			return errors.New("the Certificate is still there")
		}
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "tls-certmanager", Name: "managed-engine-tls"}, s); err != nil {
			return err
		}
		leaf, err := pki.KeyPair{CertPEM: s.Data[corev1.TLSCertKey]}.Certificate()
		if err != nil {
			return err
		}
		if err := pki.Verify(leaf, caBundle(t, "tls-certmanager"), "managed-engine.tls-certmanager.svc", time.Now()); err != nil {
			return err
		}
		if _, ok := s.Annotations["cert-manager.io/certificate-name"]; ok {
			return errors.New("the Secret still carries cert-manager's annotations")
		}
		return nil
	})
}

// TestEngineWithAnotherCertificateIsRefused: the operator reads an engine
// pod only when its certificate verifies against the world's bundle for
// the program's Service: a server with a certificate from another CA,
// with the world's CA but another program's name, or expired, is refused with
// EngineCertificateUntrusted, and nothing it says is measured.
func TestEngineWithAnotherCertificateIsRefused(t *testing.T) {
	createWorld(t, newWorld("tls-impostor", "tls-impostor", wellbeingv1alpha1.ContextSocial))
	p := newProgram("tls-impostor", "genuine", "tls-impostor")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	create(t, p)
	secretOf(t, "tls-impostor", "genuine-engine-tls")
	ca := secretOf(t, "tls-impostor", controllers.CASecretName)
	worldCA := pki.KeyPair{CertPEM: ca.Data[corev1.TLSCertKey], KeyPEM: ca.Data[corev1.TLSPrivateKeyKey]}
	eventually(t, "deployment", func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: "tls-impostor", Name: "genuine-engine"}, &appsv1.Deployment{})
	})

	otherCA, err := pki.NewCA("someone else", time.Now(), pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	fromOtherCA, err := pki.IssueServing(otherCA, controllers.EngineDNSNames(p), time.Now(), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	other := p.DeepCopy()
	other.Name = "other"
	forOtherProgram, err := pki.IssueServing(worldCA, controllers.EngineDNSNames(other), time.Now(), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := pki.IssueServing(worldCA, controllers.EngineDNSNames(p), time.Now().Add(-100*24*time.Hour), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	// The impostor answers as an engine would, with a publishable cohort:
	// if the operator trusted it, the read would succeed.
	size, loss := 40, 0.25
	cohort := contract.CohortSummary{Scope: contract.ScopeReplica, Published: true, MinCohortSize: 11, Size: &size, Loss: &loss, ObservedAt: time.Now()}
	for name, pair := range map[string]pki.KeyPair{"another CA": fromOtherCA, "another program's name": forOtherProgram, "expired": expired} {
		t.Run(name, func(t *testing.T) {
			port := serveTLS(t, pair, cohort)
			f := &loopFixture{t: t, program: p, ports: []int{port}}
			f.announcePod(0)
			t.Cleanup(func() {
				_ = k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tls-impostor", Name: "genuine-engine-0"}}, client.GracePeriodSeconds(0))
				eventually(t, "pod gone", func() error {
					if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "tls-impostor", Name: "genuine-engine-0"}, &corev1.Pod{}); err == nil {
						return errors.New("still there")
					}
					return nil
				})
			})
			reader := &controllers.EngineLossReader{Client: k8s}
			_, err := reader.Read(context.Background(), p, 11)
			var me *controllers.MeasurementError
			if !errors.As(err, &me) || me.Reason != wellbeingv1alpha1.ReasonEngineCertificateUntrusted {
				t.Fatalf("read: %v, want %s", err, wellbeingv1alpha1.ReasonEngineCertificateUntrusted)
			}
			if !strings.Contains(me.Message, controllers.CABundleConfigMapName) {
				t.Errorf("message %q does not name the bundle", me.Message)
			}
		})
	}

	// The same server with the program's own certificate is read.
	serving := secretOf(t, "tls-impostor", "genuine-engine-tls")
	port := serveTLS(t, pki.KeyPair{CertPEM: serving.Data[corev1.TLSCertKey], KeyPEM: serving.Data[corev1.TLSPrivateKeyKey]}, cohort)
	f := &loopFixture{t: t, program: p, ports: []int{port}}
	f.announcePod(0)
	m, err := (&controllers.EngineLossReader{Client: k8s}).Read(context.Background(), p, 11)
	if err != nil || m.CohortSize != 40 {
		t.Fatalf("read with the program's certificate: %+v, %v", m, err)
	}
}

// serveTLS serves GET /v1/cohort over HTTPS on loopback with pair and
// returns the port.
func serveTLS(t *testing.T, pair pki.KeyPair, cohort contract.CohortSummary) int {
	t.Helper()
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cohort" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(cohort)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// TestRunningEngineTakesARenewedCertificateUnderLoad: a real engine
// process serves the program's certificate; when the certificate is
// issued anew (here: its Secret deleted, so the operator issues it again
// at once, on the wall clock the engine's clients check), the files
// follow as a kubelet's would and the same process serves the new
// certificate, while a client opening a new connection for every request
// (a handshake each) loses none of them.
func TestRunningEngineTakesARenewedCertificateUnderLoad(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "tls-live", wellbeingv1alpha1.ContextSocial)
	p := newProgram("tls-live", "live", "tls-live")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	f := startLoop(t, "tls-live", p, 1)
	trust := engineTrust(t, p)
	bundle := caBundle(t, "tls-live")
	served := func() (*x509.Certificate, error) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(bundle)
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", f.ports[0]), &tls.Config{RootCAs: roots, ServerName: controllers.EngineServerName(p), MinVersion: tls.VersionTLS12})
		if err != nil {
			return nil, err
		}
		defer func() { _ = conn.Close() }()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	first := leafOf(t, secretOf(t, "tls-live", "live-engine-tls"))
	if c, err := served(); err != nil || !c.Equal(first) {
		t.Fatalf("the engine serves %v (%v), want the Secret's certificate", c, err)
	}

	// Load: a fresh connection per request, read-only token.
	ro := string(secretOf(t, "tls-live", "live-engine-token").Data[controllers.ReadOnlyTokenKey])
	noReuse := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c, err := engineclient.New(f.urls()[0], append(trust, engineclient.WithHTTPClient(noReuse), engineclient.WithToken(ro), engineclient.WithRetry(engineclient.NoRetry))...)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	type tally struct{ ok, failed int }
	done := make(chan tally)
	var firstFailure error
	go func() {
		var n tally
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			if _, err := c.Cohort(ctx); err != nil {
				if firstFailure == nil {
					firstFailure = err
				}
				n.failed++
			} else {
				n.ok++
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tls-live", Name: "live-engine-tls"}}); err != nil {
		t.Fatal(err)
	}
	var renewed *x509.Certificate
	eventually(t, "the engine serves the new certificate", func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "tls-live", Name: "live-engine-tls"}, s); err != nil {
			return err
		}
		renewed = leafOf(t, s)
		if renewed.Equal(first) {
			return errors.New("not re-issued yet")
		}
		got, err := served()
		if err != nil {
			return err
		}
		if !got.Equal(renewed) {
			return fmt.Errorf("still serving serial %s", got.SerialNumber.Text(16))
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // a few more requests on the new certificate
	close(stop)
	n := <-done
	if n.failed > 0 || n.ok < 10 {
		t.Errorf("%d requests answered, %d failed (first: %v) across the renewal", n.ok, n.failed, firstFailure)
	}
	if f.engines[0].Exited() {
		t.Error("the engine process exited: the renewal restarted it")
	}
	t.Logf("%d requests, each a new TLS handshake, answered across the renewal", n.ok)
}

// TestIssuerRefValidation: the schema refuses an issuerRef without a name
// or of another kind, naming the field, and defaults kind and group.
func TestIssuerRefValidation(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		ref   wellbeingv1alpha1.CertificateIssuerReference
		field string
	}{
		"no name":      {wellbeingv1alpha1.CertificateIssuerReference{Kind: "Issuer"}, "spec.tls.issuerRef.name"},
		"unknown kind": {wellbeingv1alpha1.CertificateIssuerReference{Name: "corp", Kind: "CertificateAuthority"}, "spec.tls.issuerRef.kind"},
		"bad group":    {wellbeingv1alpha1.CertificateIssuerReference{Name: "corp", Group: "Not A Group"}, "spec.tls.issuerRef.group"},
	} {
		w := newWorld("tls-invalid", "tls-invalid", wellbeingv1alpha1.ContextSocial)
		w.Spec.TLS = &wellbeingv1alpha1.WorldTLS{IssuerRef: &tc.ref}
		err := k8s.Create(ctx, w)
		if err == nil {
			_ = k8s.Delete(ctx, w)
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want it to name %s", name, err, tc.field)
		}
	}
	w := newWorld("tls-defaults", "tls-defaults", wellbeingv1alpha1.ContextSocial)
	w.Spec.TLS = &wellbeingv1alpha1.WorldTLS{IssuerRef: &wellbeingv1alpha1.CertificateIssuerReference{Name: "corp"}}
	create(t, w)
	got := &wellbeingv1alpha1.VirtualWorld{}
	get(t, client.ObjectKey{Name: "tls-defaults"}, got)
	if ref := got.Spec.TLS.IssuerRef; ref.Kind != "Issuer" || ref.Group != "cert-manager.io" {
		t.Errorf("defaults: kind %q group %q, want Issuer and cert-manager.io", ref.Kind, ref.Group)
	}
}

// TestLossObservedNamesAnUntrustedEngine: the tuner's condition says why it
// holds when the only engine presents a certificate of another CA.
func TestLossObservedNamesAnUntrustedEngine(t *testing.T) {
	setupWorld(t, "tls-untrusted", wellbeingv1alpha1.ContextSocial)
	p := tunedProgram("tls-untrusted", "wary")
	create(t, p)
	secretOf(t, "tls-untrusted", "wary-engine-tls")
	waitDeployment(t, p)
	otherCA, err := pki.NewCA("someone else", time.Now(), pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := pki.IssueServing(otherCA, controllers.EngineDNSNames(p), time.Now(), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	size, loss := 40, 0.25
	port := serveTLS(t, impostor, contract.CohortSummary{Scope: contract.ScopeReplica, Published: true, MinCohortSize: 11, Size: &size, Loss: &loss, ObservedAt: time.Now()})
	f := &loopFixture{t: t, program: p, ports: []int{port}}
	f.announcePod(0)
	waitUpTo(t, 40*time.Second, "LossObserved names the untrusted engine", func() error {
		got := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(p), got)
		return conditionIs(got.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionFalse, wellbeingv1alpha1.ReasonEngineCertificateUntrusted)
	})
	got := &wellbeingv1alpha1.MeditationProgram{}
	get(t, client.ObjectKeyFromObject(p), got)
	if got.Status.Loss != nil {
		t.Errorf("a loss was recorded from an untrusted engine: %+v", got.Status.Loss)
	}
}
