package engineruntime

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The pod's Secret volumes, by the names the operator gives them
// (controllers/engine_objects.go), are the Secrets materialised for the
// engine: the backup token among them.
func TestSourceOfReadsTheTokenSecrets(t *testing.T) {
	secret := func(volume, name string) corev1.Volume {
		return corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "calm-engine-config"}}}},
				secret("token", "calm-engine-token"),
				secret("backup-token", "calm-engine-backup-token"),
				secret("pseudonymization-key", "attune-pseudonymization-key"),
				secret("clients", "calm-engine-clients"),
				secret("user-token-key", "calm-engine-user-token-key"),
			},
			Containers: []corev1.Container{{Name: "engine", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	src, port, err := sourceOf(pod)
	if err != nil {
		t.Fatal(err)
	}
	if port != 8080 || src.TokenSecret != "calm-engine-token" || src.BackupTokenSecret != "calm-engine-backup-token" ||
		src.ClientsSecret != "calm-engine-clients" || src.UserTokenKeySecret != "calm-engine-user-token-key" {
		t.Fatalf("source %+v, port %d", src, port)
	}
}
