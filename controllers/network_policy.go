package controllers

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// The engines' NetworkPolicy (docs/access.md). It selects one program's
// engine pods and admits, on the engine's API port only, exactly the
// namespaces (and pod labels) of spec.access.clients, the operator's
// namespace (it reads the engines' loss) and the world's monitoring
// namespaces; with no clients, the world's own namespace (the program
// token's users) instead. The model sidecar's port is never admitted: the
// stock model servers cannot all be told to bind 127.0.0.1 without
// breaking the kubelet's probes on the pod's address, so the policy is
// what keeps that port, which has no authentication, closed.
//
// Egress: DNS to the cluster's resolver, the PostgreSQL store when one is
// configured, the shared model endpoint when one is named, and HTTPS when
// the model sidecar downloads its model at start; nothing else. The model
// sidecar shares the pod's network namespace, so this is its egress too:
// with a model on a claim and no endpoint, text sent to the model cannot
// leave the pod. Peers (Kubernetes NetworkPolicy semantics, as Calico,
// Cilium and kube-router implement them): rules add up, so the world's
// baseline policy leaves engine pods out, and the world's deny-all
// (engineDenyAllPolicy) isolates them until this one admits their peers.

// dnsPeer is the cluster resolver: CoreDNS keeps kube-dns's k8s-app label.
var dnsPeer = networkingv1.NetworkPolicyPeer{
	NamespaceSelector: namespaceSelector("kube-system"),
	PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
}

const defaultPostgresPort = 5432

// namespaceSelector selects namespaces by name (the label every namespace
// carries since Kubernetes 1.22).
func namespaceSelector(names ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: slices.Sorted(slices.Values(names)),
	}}}
}

func engineNetworkPolicyName(p *wellbeingv1alpha1.MeditationProgram) string { return engineName(p) }

func tcpPort(port int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(port))}
}

// engineNetworkPolicy is the program's NetworkPolicy; operatorNamespace is
// admitted when set.
func engineNetworkPolicy(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, operatorNamespace string) *networkingv1.NetworkPolicy {
	var from []networkingv1.NetworkPolicyPeer
	for _, c := range sortedClients(p) {
		peer := networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(c.Namespaces...)}
		if len(c.PodSelector) > 0 {
			peer.PodSelector = labelSelector(c.PodSelector)
		}
		from = append(from, peer)
	}
	if len(p.Spec.Access.Clients) == 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(p.Namespace)})
	}
	if operatorNamespace != "" {
		from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(operatorNamespace)})
	}
	if ns := w.Spec.Isolation.MonitoringNamespaces; len(ns) > 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(ns...)})
	}

	egress := []networkingv1.NetworkPolicyEgressRule{{
		To: []networkingv1.NetworkPolicyPeer{dnsPeer},
		Ports: []networkingv1.NetworkPolicyPort{
			{Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromInt32(53))},
			{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(53))},
		},
	}}
	if usesPostgres(p) {
		egress = append(egress, postgresEgress(p.Spec.Access.PostgresPeer))
	}
	if m := p.Spec.Engine.Model; m != nil && m.Endpoint != "" {
		// The shared model server: its port, any address (a Service's
		// ClusterIP is rewritten to pod addresses a policy cannot name
		// ahead of time).
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{tcpPort(endpointPort(m.Endpoint))}})
	}
	if m := p.Spec.Engine.Model; runsModelSidecar(p) && m.Storage != nil && m.Storage.URI != "" {
		// The runtime downloads the model at start (gs://, s3://, hf://,
		// https://...): HTTPS anywhere. A model on a claim needs none.
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{tcpPort(443)}})
	}

	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: engineNetworkPolicyName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: EngineSelectorLabels(p)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: []networkingv1.NetworkPolicyPort{tcpPort(engineHTTPPort)}}},
			Egress:      egress,
		},
	}
}

// postgresEgress admits the PostgreSQL store: the named peer, or the
// default port to any address.
func postgresEgress(peer *wellbeingv1alpha1.NetworkPeer) networkingv1.NetworkPolicyEgressRule {
	if peer == nil {
		return networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{tcpPort(defaultPostgresPort)}}
	}
	port := peer.Port
	if port == 0 {
		port = defaultPostgresPort
	}
	to := networkingv1.NetworkPolicyPeer{}
	if peer.CIDR != "" {
		to.IPBlock = &networkingv1.IPBlock{CIDR: peer.CIDR}
	} else {
		to.NamespaceSelector = namespaceSelector(peer.Namespace)
		if len(peer.PodSelector) > 0 {
			to.PodSelector = labelSelector(peer.PodSelector)
		}
	}
	return networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{to}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(port)}}
}

// endpointPort is the TCP port of an http(s) URL.
func endpointPort(endpoint string) int32 {
	u, err := url.Parse(endpoint)
	if err != nil {
		return 443
	}
	if n, err := strconv.ParseInt(u.Port(), 10, 32); err == nil && n > 0 {
		return int32(n)
	}
	if u.Scheme == "http" {
		return 80
	}
	return 443
}

// reconcileNetworkPolicy applies the engines' NetworkPolicy, or removes it
// when the world turns isolation off.
func (r *MeditationProgramReconciler) reconcileNetworkPolicy(ctx context.Context, a *childApplier, rc *programReconcile) error {
	policy := engineNetworkPolicy(rc.program, rc.world, r.OperatorNamespace)
	admitMonitoringNamespaces(policy, rc.world, r.MonitoringNamespaces)
	if !ptr.Deref(rc.world.Spec.Isolation.NetworkPolicy, true) {
		return a.deleteIfOwned(ctx, rc.program, policy)
	}
	return a.apply(ctx, rc.program, policy)
}

// worldBaselinePodSelector selects a world namespace's pods except engine
// pods, for the world's NetworkPolicy.
func worldBaselinePodSelector() metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: LabelName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{EngineAppName},
	}}}
}

// EngineDenyAllPolicyName is the world's NetworkPolicy that isolates every
// engine pod of its namespace, ingress and egress.
const EngineDenyAllPolicyName = "attune-engines-deny-all"

// engineDenyAllPolicy selects every engine pod of the world's namespace
// with no rules: it admits nothing by itself, and since policies add up,
// an engine pod gets exactly what its program's policy allows. It exists
// from the world's creation on, so an engine pod is never unisolated, even
// before (or when a step fails ahead of) its program's policy.
func engineDenyAllPolicy(w *wellbeingv1alpha1.VirtualWorld) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: EngineDenyAllPolicyName, Namespace: w.Spec.Namespace, Labels: worldLabels(w)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: LabelName, Operator: metav1.LabelSelectorOpIn, Values: []string{EngineAppName},
			}}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

func labelSelector(m map[string]wellbeingv1alpha1.LabelValue) *metav1.LabelSelector {
	labels := make(map[string]string, len(m))
	for k, v := range m {
		labels[k] = string(v)
	}
	return &metav1.LabelSelector{MatchLabels: labels}
}

// checkPodSelectors refuses label keys the API server would refuse in the
// NetworkPolicy, naming the program's field (the CRD checks the values).
func checkPodSelectors(p *wellbeingv1alpha1.MeditationProgram) error {
	check := func(field string, m map[string]wellbeingv1alpha1.LabelValue) error {
		for k := range m {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return fmt.Errorf("%s: key %q is not a label key: %s", field, k, strings.Join(errs, "; "))
			}
		}
		return nil
	}
	for i, c := range p.Spec.Access.Clients {
		if err := check(fmt.Sprintf("spec.access.clients[%d].podSelector", i), c.PodSelector); err != nil {
			return err
		}
	}
	if peer := p.Spec.Access.PostgresPeer; peer != nil {
		return check("spec.access.postgresPeer.podSelector", peer.PodSelector)
	}
	return nil
}
