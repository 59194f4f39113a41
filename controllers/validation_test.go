package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const validProgram = `
apiVersion: wellbeing.attune.io/v1alpha1
kind: MeditationProgram
metadata: {name: NAME, namespace: default}
spec:
  worldRef: {name: plaza}
  target: {attention: 0.8, emotion: 0.7, resilience: 0.7}
  interventions: [FocusedAttention]
`

const validWorld = `
apiVersion: wellbeing.attune.io/v1alpha1
kind: VirtualWorld
metadata: {name: NAME}
spec:
  namespace: valid-ns
  context: Social
`

// TestInvalidManifestsAreRejected applies manifests a user might write with
// kubectl and checks the API server rejects each with a message naming the
// field. The schema, not the operator, does this.
func TestInvalidManifestsAreRejected(t *testing.T) {
	cases := []struct {
		name     string
		base     string
		patch    string // YAML merged into the base spec
		metaName string
		want     string
	}{
		{"world namespace not a DNS label", validWorld, `namespace: Not_A_Label`, "", "spec.namespace"},
		{"world context unknown", validWorld, `context: Casino`, "", `spec.context: Unsupported value: "Casino"`},
		{"world context missing", validWorld, `context: null`, "", "spec.context: Required value"},
		{"world min cohort below 2", validWorld, `privacy: {minCohortSize: 1}`, "", "spec.privacy.minCohortSize"},
		{"world negative gpu quota", validWorld, `gpuQuota: {limit: -1}`, "", "spec.gpuQuota.limit"},
		{"world retention too short", validWorld, `privacy: {retention: 5s}`, "", "spec.privacy.retention must be at least 1m"},
		{"world retention not a duration", validWorld, `privacy: {retention: forever}`, "", "spec.privacy.retention"},
		{"world quota resource not a GPU", validWorld, `gpuQuota: {resourceName: cpu, limit: 1}`, "", "spec.gpuQuota.resourceName"},
		{"world claims kube-system", validWorld, `namespace: kube-system`, "", "spec.namespace must not be a kube-* namespace"},
		{"world claims kube-public", validWorld, `namespace: kube-public`, "", "spec.namespace must not be a kube-* namespace"},
		{"world claims kube-node-lease", validWorld, `namespace: kube-node-lease`, "", "spec.namespace must not be a kube-* namespace"},
		{"world claims default", validWorld, `namespace: default`, "", "spec.namespace must not be default"},
		{"world namespace empty", validWorld, `namespace: ""`, "", "spec.namespace"},
		{"world namespace longer than a DNS label", validWorld, `namespace: ` + strings.Repeat("n", 64), "", "spec.namespace: Too long"},
		{"world namespace with a dot", validWorld, `namespace: tenant.a`, "", "spec.namespace"},
		{"world context in lower case", validWorld, `context: social`, "", `spec.context: Unsupported value: "social"`},
		{"world display name too long", validWorld, `displayName: ` + strings.Repeat("d", 129), "", "spec.displayName: Too long"},
		{"world key reference without a key", validWorld, `privacy: {pseudonymizationKeyRef: {name: hsm}}`, "", "spec.privacy.pseudonymizationKeyRef.key: Required value"},
		{"world network policy not a boolean", validWorld, `isolation: {networkPolicy: "yes"}`, "", "spec.isolation.networkPolicy"},
		{"world MIG profile that does not exist", validWorld, `gpuQuota: {resourceName: nvidia.com/mig-9g.10gb, limit: 1}`, "", "spec.gpuQuota.resourceName"},
		{"world retention negative", validWorld, `privacy: {retention: -5m}`, "", "spec.privacy.retention"},
		{"program prometheus address not http", validProgram, `tuning: {source: {type: Prometheus, prometheus: {address: "file:///etc/passwd"}}}`, "", "spec.tuning.source.prometheus.address"},
		{"program runtimeClassName longer than a DNS subdomain", validProgram, `engine: {gpu: {runtimeClassName: ` + strings.Repeat("r", 254) + `}}`, "", "spec.engine.gpu.runtimeClassName: Too long"},
		{"program target above 1", validProgram, `target: {attention: 1.5, emotion: 0.5, resilience: 0.5}`, "", "spec.target.attention"},
		{"program target negative", validProgram, `target: {attention: 0.5, emotion: -0.1, resilience: 0.5}`, "", "spec.target.emotion"},
		{"program weights all zero", validProgram, `weights: {attention: 0, emotion: 0, resilience: 0}`, "", "spec.weights must not all be zero"},
		{"program weight negative", validProgram, `weights: {attention: -1}`, "", "spec.weights.attention"},
		{"program no interventions", validProgram, `interventions: []`, "", "spec.interventions"},
		{"program duplicate intervention", validProgram, `interventions: [BodyScan, BodyScan]`, "", "spec.interventions[1]: Duplicate value"},
		{"program unknown intervention", validProgram, `interventions: [Hypnosis]`, "", `spec.interventions[0]: Unsupported value: "Hypnosis"`},
		{"program strength initial below min", validProgram, `strength: {initial: 0.1, min: 0.3, max: 0.9}`, "", "spec.strength must satisfy min <= initial <= max"},
		{"program strength above 1", validProgram, `strength: {initial: 0.5, min: 0.1, max: 1.2}`, "", "spec.strength.max"},
		{"program tuning interval under 10s", validProgram, `tuning: {interval: 5s}`, "", "spec.tuning.interval must be at least 10s"},
		{"program tuning settle zero", validProgram, `tuning: {settle: 0s}`, "", "spec.tuning.settle must be greater than 0s"},
		{"program tuning settle not below interval", validProgram, `tuning: {interval: 30s, settle: 30s}`, "", "spec.tuning.settle must be shorter than spec.tuning.interval"},
		{"program tuning settle beyond the default interval", validProgram, `tuning: {settle: 2m}`, "", "spec.tuning.settle must be shorter than spec.tuning.interval"},
		{"program maxStep zero", validProgram, `tuning: {maxStep: 0}`, "", "spec.tuning.maxStep"},
		{"program maxStep above 1", validProgram, `tuning: {maxStep: 1.5}`, "", "spec.tuning.maxStep"},
		{"program tuning mode unknown", validProgram, `tuning: {mode: Sometimes}`, "", `spec.tuning.mode: Unsupported value: "Sometimes"`},
		{"program prometheus without address", validProgram, `tuning: {source: {type: Prometheus}}`, "", "spec.tuning.source.prometheus.address is required"},
		{"program dose maxPerDay zero", validProgram, `dose: {maxPerDay: 0}`, "", "spec.dose.maxPerDay"},
		{"program dose maxPerDay above 96", validProgram, `dose: {maxPerDay: 97}`, "", "spec.dose.maxPerDay"},
		{"program dose cooldown above 24h", validProgram, `dose: {cooldown: 25h}`, "", "spec.dose.cooldown must be between 0s and 24h"},
		{"program dose cooldown negative", validProgram, `dose: {cooldown: -1m}`, "", "spec.dose.cooldown"},
		{"program dose cooldown not a duration", validProgram, `dose: {cooldown: soon}`, "", "spec.dose.cooldown"},
		{"program dose outcome window under 1s", validProgram, `dose: {outcomeWindow: 500ms}`, "", "spec.dose.outcomeWindow must be between 1s and 24h"},
		{"program dose outcome window above 24h", validProgram, `dose: {outcomeWindow: 48h}`, "", "spec.dose.outcomeWindow must be between 1s and 24h"},
		{"program dose outcome window zero", validProgram, `dose: {outcomeWindow: 0s}`, "", "spec.dose.outcomeWindow must be between 1s and 24h"},
		{"program state decay under 1s", validProgram, `estimation: {stateDecay: 100ms}`, "", "spec.estimation.stateDecay must be between 1s and 24h"},
		{"program state decay above 24h", validProgram, `estimation: {stateDecay: 25h}`, "", "spec.estimation.stateDecay must be between 1s and 24h"},
		{"program trait decay under 1m", validProgram, `estimation: {traitDecay: 30s}`, "", "spec.estimation.traitDecay must be between 1m and 8760h"},
		{"program trait decay above a year", validProgram, `estimation: {traitDecay: 9000h}`, "", "spec.estimation.traitDecay must be between 1m and 8760h"},
		{"program stress recovery zero", validProgram, `estimation: {stressRecovery: 0s}`, "", "spec.estimation.stressRecovery must be between 1s and 24h"},
		{"program stress recovery not a duration", validProgram, `estimation: {stressRecovery: quick}`, "", "spec.estimation.stressRecovery"},
		{"program negative replicas", validProgram, `engine: {replicas: -1}`, "", "spec.engine.replicas"},
		{"program replicas above 1 on the embedded store", validProgram, `engine: {replicas: 3}`, "", "spec.engine.replicas: Invalid value"},
		{"program replicas above 1, store says so", validProgram, `engine: {replicas: 2, store: {type: Embedded}}`, "", "Set spec.engine.store.type to PostgreSQL"},
		{"program store type unknown", validProgram, `engine: {store: {type: Redis}}`, "", `spec.engine.store.type: Unsupported value: "Redis"`},
		{"program postgres without secretRef", validProgram, `engine: {store: {type: PostgreSQL}}`, "", "spec.engine.store.postgres is required when spec.engine.store.type is PostgreSQL"},
		{"program postgres secret name empty", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: ""}}}}`, "", "spec.engine.store.postgres.secretRef.name"},
		{"program postgres settings on the embedded store", validProgram, `engine: {store: {postgres: {secretRef: {name: db}}}}`, "", "spec.engine.store.postgres is only allowed when spec.engine.store.type is PostgreSQL"},
		{"program volume on the PostgreSQL store", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}, embedded: {volume: {size: 1Gi}}}}`, "", "spec.engine.store.embedded is only allowed when spec.engine.store.type is Embedded"},
		{"program volume and ephemeral", validProgram, `engine: {store: {embedded: {ephemeral: true, volume: {size: 1Gi}}}}`, "", "ephemeral: true goes without"},
		{"program requireReconsent without a policy version", validProgram, `consent: {requireReconsent: true}`, "", "spec.consent.requireReconsent needs spec.consent.policyVersion"},
		{"program policy version with a space", validProgram, `consent: {policyVersion: "v 2"}`, "", "spec.consent.policyVersion"},
		{"program policy version too long", validProgram, `consent: {policyVersion: ` + strings.Repeat("v", 65) + `}`, "", "spec.consent.policyVersion: Too long"},
		{"program volume without size", validProgram, `engine: {store: {embedded: {volume: {storageClassName: fast}}}}`, "", "spec.engine.store.embedded.volume.size: Required value"},
		{"program volume of size zero", validProgram, `engine: {store: {embedded: {volume: {size: "0"}}}}`, "", "spec.engine.store.embedded.volume.size must be positive"},
		{"program volume size not a quantity", validProgram, `engine: {store: {embedded: {volume: {size: lots}}}}`, "", "spec.engine.store.embedded.volume.size"},
		{"program gpu resource name invalid", validProgram, `engine: {gpu: {resourceName: "nvidia.com/GPU!"}}`, "", "spec.engine.gpu.resourceName"},
		{"program negative gpu count", validProgram, `engine: {gpu: {count: -2}}`, "", "spec.engine.gpu.count"},
		{"program model without image", validProgram, `engine: {model: {modelName: emotion}}`, "", "spec.engine.model.image: Required value"},
		{"program model port privileged", validProgram, `engine: {model: {image: triton, modelName: emotion, port: 80}}`, "", "spec.engine.model.port"},
		{"program runtimeClassName not a DNS subdomain", validProgram, `engine: {gpu: {runtimeClassName: "Nvidia_Runtime"}}`, "", "spec.engine.gpu.runtimeClassName must be a DNS subdomain"},
		{"program modelName with a slash", validProgram, `engine: {model: {image: m, modelName: "org/emotion"}}`, "", "spec.engine.model.modelName must be a plain name"},
		{"program modelName with dot-dot", validProgram, `engine: {model: {image: m, modelName: "emotion..v2"}}`, "", "spec.engine.model.modelName must be a plain name"},
		{"program modelName with URL characters", validProgram, `engine: {model: {image: m, modelName: "emotion?x=1"}}`, "", "spec.engine.model.modelName must be a plain name"},
		{"program labels on a Custom model", validProgram, `engine: {model: {image: m, modelName: emotion, labels: [joy, sadness]}}`, "", "spec.engine.model.labels need a classifier runtime"},
		{"program KServe model without labels", validProgram, `engine: {model: {runtime: KServeHuggingFace, modelName: emotion, storage: {uri: "hf://org/model"}}}`, "", "spec.engine.model.labels (at least 2) are required"},
		{"program model label without a valence", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {uri: "s3://b/m"}, labels: [joy, LABEL_1]}}`, "", "spec.engine.model.labels must each be one the engine maps"},
		{"program model runtime unknown", validProgram, `engine: {model: {runtime: TorchServe, modelName: emotion}}`, "", `spec.engine.model.runtime: Unsupported value: "TorchServe"`},
		{"program model endpoint and image", validProgram, `engine: {model: {image: m, modelName: emotion, endpoint: "http://emotion.models"}}`, "", "spec.engine.model.endpoint and spec.engine.model.image are mutually exclusive"},
		{"program model endpoint not http", validProgram, `engine: {model: {modelName: emotion, endpoint: "grpc://emotion.models:8001"}}`, "", "spec.engine.model.endpoint must be an http:// or https:// URL"},
		{"program model endpoint not a URL", validProgram, `engine: {model: {modelName: emotion, endpoint: "emotion.models"}}`, "", "spec.engine.model.endpoint must be an http:// or https:// URL"},
		{"program model endpoint with storage", validProgram, `engine: {model: {modelName: emotion, endpoint: "http://emotion.models", storage: {uri: "s3://b/m"}}}`, "", "spec.engine.model.storage is only allowed for a sidecar"},
		{"program runtime without storage", validProgram, `engine: {model: {runtime: Triton, modelName: emotion}}`, "", "spec.engine.model.storage: Required value"},
		{"program storage with claim and uri", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {uri: "s3://b/m", persistentVolumeClaim: {claimName: models}}}}`, "", "spec.engine.model.storage needs exactly one of persistentVolumeClaim and uri"},
		{"program storage empty", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {}}}`, "", "spec.engine.model.storage needs exactly one of persistentVolumeClaim and uri"},
		{"program storage uri the runtime cannot read", validProgram, `engine: {model: {runtime: MLServerHuggingFace, modelName: emotion, storage: {uri: "s3://b/m"}}}`, "", "spec.engine.model.storage.uri has a scheme the runtime does not read"},
		{"program storage uri hf for Triton", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {uri: "hf://org/model"}}}`, "", "spec.engine.model.storage.uri has a scheme the runtime does not read"},
		{"program storage uri not a URI", validProgram, `engine: {model: {image: m, modelName: emotion, storage: {uri: "/models/emotion"}}}`, "", "spec.engine.model.storage.uri must be a URI"},
		{"program storage claim name invalid", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {persistentVolumeClaim: {claimName: Models_1}}}}`, "", "spec.engine.model.storage.persistentVolumeClaim.claimName must be a DNS subdomain"},
		{"program storage subPath escapes", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {persistentVolumeClaim: {claimName: models, subPath: "a/../../etc"}}}}`, "", "spec.engine.model.storage.persistentVolumeClaim.subPath must be a relative path"},
		{"program storage subPath absolute", validProgram, `engine: {model: {runtime: Triton, modelName: emotion, storage: {persistentVolumeClaim: {claimName: models, subPath: "/etc"}}}}`, "", "spec.engine.model.storage.persistentVolumeClaim.subPath must be a relative path"},
		{"program model port is the engine's", validProgram, `engine: {model: {image: m, modelName: emotion, port: 8080}}`, "", "spec.engine.model.port must not be 8080"},
		{"program MLServer port on its gRPC port", validProgram, `engine: {model: {runtime: MLServerHuggingFace, modelName: emotion, port: 8081, storage: {uri: "hf://org/model"}}}`, "", "spec.engine.model.port must not be 8081 or 8082"},
		{"program model labels empty string", validProgram, `engine: {model: {image: m, modelName: emotion, labels: [joy, ""]}}`, "", "spec.engine.model.labels[1]"},
		{"program autoscaling on the embedded store", validProgram, `engine: {autoscaling: {maxReplicas: 3}}`, "", "spec.engine.autoscaling needs a shared store"},
		{"program autoscaling min above max", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {minReplicas: 4, maxReplicas: 2}}`, "", "spec.engine.autoscaling.minReplicas must not exceed spec.engine.autoscaling.maxReplicas"},
		{"program autoscaling without maxReplicas", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {minReplicas: 2}}`, "", "spec.engine.autoscaling.maxReplicas: Required value"},
		{"program autoscaling maxReplicas zero", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {maxReplicas: 0}}`, "", "spec.engine.autoscaling.maxReplicas"},
		{"program autoscaling cpu above 100", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {maxReplicas: 3, metrics: {cpuUtilization: 150}}}`, "", "spec.engine.autoscaling.metrics.cpuUtilization"},
		{"program autoscaling ingest rate zero", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {maxReplicas: 3, metrics: {ingestRate: {averageValue: "0"}}}}`, "", "spec.engine.autoscaling.metrics.ingestRate.averageValue must be positive"},
		{"program autoscaling ingest metric name invalid", validProgram, `engine: {store: {type: PostgreSQL, postgres: {secretRef: {name: db}}}, autoscaling: {maxReplicas: 3, metrics: {ingestRate: {metricName: "samples/s", averageValue: "100"}}}}`, "", "spec.engine.autoscaling.metrics.ingestRate.metricName"},
		{"program without world", validProgram, `worldRef: null`, "", "spec.worldRef: Required value"},
		{"program name too long for its engine", validProgram, ``, "a-program-name-that-is-far-too-long-for-the-engine-service", "metadata.name must be a DNS label of at most 50 characters"},
		{"program name starting with a digit", validProgram, ``, "1st-program", "metadata.name must be a DNS label"},
	}
	if len(cases) < 15 {
		t.Fatalf("want at least 15 invalid manifests, have %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.metaName
			if name == "" {
				name = "invalid"
			}
			obj := manifest(t, strings.Replace(tc.base, "NAME", name, 1), tc.patch)
			err := k8s.Create(context.Background(), obj)
			if err == nil {
				_ = k8s.Delete(context.Background(), obj)
				t.Fatalf("accepted; want a rejection naming %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("err = %v, want an Invalid error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestWorldContextAndNamespaceAreImmutable: a world's context cannot
// change after creation (data gathered under one context must not carry
// into one that forbids it), nor its namespace; other fields can.
func TestWorldContextAndNamespaceAreImmutable(t *testing.T) {
	ctx := context.Background()
	obj := manifest(t, strings.Replace(validWorld, "NAME", "immutable", 1), `namespace: immutable-ns`)
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(ctx, obj) }()
	for _, tc := range []struct{ field, value, want string }{
		{"context", "Workplace", "spec.context is immutable"},
		{"context", "Health", "spec.context is immutable"},
		{"namespace", "moved-ns", "spec.namespace is immutable"},
	} {
		changed := obj.DeepCopy()
		if err := unstructured.SetNestedField(changed.Object, tc.value, "spec", tc.field); err != nil {
			t.Fatal(err)
		}
		err := k8s.Update(ctx, changed, client.DryRunAll)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spec.%s → %s: err = %v, want %q", tc.field, tc.value, err, tc.want)
		}
	}
	changed := obj.DeepCopy()
	if err := unstructured.SetNestedField(changed.Object, "Renamed", "spec", "displayName"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Update(ctx, changed, client.DryRunAll); err != nil {
		t.Errorf("changing spec.displayName: %v", err)
	}
}

// TestDefaultsAreApplied checks the schema fills every default it promises.
func TestDefaultsAreApplied(t *testing.T) {
	obj := manifest(t, strings.Replace(validProgram, "NAME", "defaults", 1), "")
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(context.Background(), obj) }()
	want := map[string]any{
		"spec.weights.attention":       1.0,
		"spec.strength.initial":        0.5,
		"spec.strength.min":            0.1,
		"spec.strength.max":            0.9,
		"spec.tuning.mode":             "Auto",
		"spec.tuning.interval":         "60s",
		"spec.tuning.maxStep":          0.05,
		"spec.tuning.staleAfter":       "5m",
		"spec.tuning.source.type":      "Engine",
		"spec.engine.replicas":         int64(1),
		"spec.engine.gpu.resourceName": "nvidia.com/gpu",
		"spec.engine.store.type":       "Embedded",
		"spec.suspend":                 false,
		"spec.dose.maxPerDay":          int64(6),
		"spec.dose.cooldown":           "1h",
		"spec.dose.outcomeWindow":      "10m",
	}
	// spec.engine.gpu.count has no schema default: unset means 1 GPU on a
	// model sidecar and none without one.
	if _, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "engine", "gpu", "count"); found {
		t.Error("spec.engine.gpu.count is defaulted; want it unset")
	}
	for path, value := range want {
		got, found, err := unstructured.NestedFieldNoCopy(obj.Object, strings.Split(path, ".")...)
		if err != nil || !found {
			t.Errorf("%s: not defaulted", path)
			continue
		}
		if f, ok := got.(int64); ok {
			if _, wantFloat := value.(float64); wantFloat {
				got = float64(f)
			}
		}
		if got != value {
			t.Errorf("%s = %v (%T), want %v", path, got, got, value)
		}
	}
}

// TestDoseBoundsAreAccepted: the ends of each spec.dose range are valid,
// and a cooldown of 0s (none) stays 0s rather than taking the default.
func TestDoseBoundsAreAccepted(t *testing.T) {
	for i, patch := range []string{
		`dose: {maxPerDay: 1, cooldown: 0s, outcomeWindow: 1s}`,
		`dose: {maxPerDay: 96, cooldown: 24h, outcomeWindow: 24h}`,
		`dose: {cooldown: 1h30m, outcomeWindow: 90s}`,
	} {
		obj := manifest(t, strings.Replace(validProgram, "NAME", fmt.Sprintf("dose-%d", i), 1), patch)
		if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
			t.Errorf("%s rejected: %v", patch, err)
			continue
		}
		if i == 0 {
			if got, _, _ := unstructured.NestedString(obj.Object, "spec", "dose", "cooldown"); got != "0s" {
				t.Errorf("cooldown 0s came back as %q", got)
			}
		}
	}
}

// manifest parses a base manifest and merges patch (YAML) into its spec.
func manifest(t *testing.T, base, patch string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(base), &obj.Object); err != nil {
		t.Fatal(err)
	}
	if patch == "" {
		return obj
	}
	var fields map[string]any
	if err := yaml.Unmarshal([]byte(patch), &fields); err != nil {
		t.Fatal(err)
	}
	spec := obj.Object["spec"].(map[string]any)
	for k, v := range fields {
		if v == nil {
			delete(spec, k)
		} else {
			spec[k] = v
		}
	}
	return obj
}

// TestSamplesAreValid applies every sample with a server-side dry run.
func TestSamplesAreValid(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "config", "samples", "wellbeing_*.yaml"))
	if err != nil || len(paths) < 2 {
		t.Fatalf("samples: %v (found %d)", err, len(paths))
	}
	ctx := context.Background()
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if ns := obj.GetNamespace(); ns != "" {
			_ = k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		if err := k8s.Create(ctx, obj, client.DryRunAll); err != nil {
			t.Errorf("%s rejected: %v", path, err)
		}
	}
}
