package engineruntime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/attune-io/attune/internal/oiptest"
)

// ModelContainerName is the engine pod's model sidecar container.
const ModelContainerName = "model"

// modelServerSpec is what a stock model server would make of the rendered
// model container: the server it is, the port and model it serves, and
// the answers it gives.
type modelServerSpec struct {
	options oiptest.Options
	port    int
}

// writableEnv are the variables through which the stock servers' Python
// stacks (Hugging Face, PyTorch, Numba, MLServer) write caches and
// temporary files. With a read-only root filesystem each must point into a
// writable volume, or the server fails at its first write.
var writableEnv = []string{"HOME", "XDG_CACHE_HOME", "HF_HOME", "TRANSFORMERS_CACHE", "TMPDIR", "NUMBA_CACHE_DIR", "MLSERVER_METRICS_DIR"}

// modelServerOf reads the pod's model container as the stock server of its
// runtime would read its command line and environment, and checks what a
// kubelet and that server would refuse: a flag the server needs missing, a
// port the container does not declare, a mount of an undeclared volume, a
// write path outside every writable volume. labels are the model's classes
// from the engine configuration (what the model's id2label would hold).
// ok is false for a pod without a model container.
func modelServerOf(pod *corev1.Pod, labels []string) (spec modelServerSpec, ok bool, err error) {
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == ModelContainerName })
	if i < 0 {
		return modelServerSpec{}, false, nil
	}
	c := &pod.Spec.Containers[i]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	flags := map[string]string{}
	for _, a := range c.Args {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		flags[name] = value
	}
	need := func(m map[string]string, what string, keys ...string) error {
		for _, k := range keys {
			if m[k] == "" {
				return fmt.Errorf("model container: %s %s is not set", what, k)
			}
		}
		return nil
	}
	o := oiptest.Options{Labels: labels}
	var portText string
	switch {
	case slices.Equal(c.Command, []string{"python", "-m", "huggingfaceserver"}):
		// kserve huggingfaceserver: --model_name, --model_dir and the port
		// are required for a local model; probabilities only on request.
		if err := need(flags, "flag", "model_name", "model_dir", "http_port"); err != nil {
			return modelServerSpec{}, true, err
		}
		o.Runtime, o.ModelName, portText = oiptest.KServeHuggingFace, flags["model_name"], flags["http_port"]
		_, o.ReturnProbabilities = flags["return_probabilities"]
		_, o.ReturnRawLogits = flags["return_raw_logits"]
	case slices.Equal(c.Command, []string{"tritonserver"}):
		if err := need(flags, "flag", "model-repository", "http-port", "load-model"); err != nil {
			return modelServerSpec{}, true, err
		}
		if flags["model-control-mode"] != "explicit" {
			return modelServerSpec{}, true, errors.New("model container: tritonserver --load-model needs --model-control-mode=explicit")
		}
		o.Runtime, o.ModelName, portText = oiptest.Triton, flags["load-model"], flags["http-port"]
		o.TritonLabels = true
	case len(c.Command) == 3 && c.Command[0] == "mlserver" && c.Command[1] == "start":
		if err := need(env, "environment variable", "MLSERVER_HTTP_PORT", "MLSERVER_MODEL_NAME", "MLSERVER_MODEL_IMPLEMENTATION"); err != nil {
			return modelServerSpec{}, true, err
		}
		o.Runtime, o.ModelName, portText = oiptest.MLServerHuggingFace, env["MLSERVER_MODEL_NAME"], env["MLSERVER_HTTP_PORT"]
		o.Labels = nil // the pipeline answers with its own label names
		if len(labels) > 0 {
			o.Labels = labels
		}
		o.MLServerAllScores = true
	case len(c.Command) == 0:
		// Custom: the image's own entrypoint, told its port and model.
		if err := need(env, "environment variable", "MODEL_PORT", "MODEL_NAME"); err != nil {
			return modelServerSpec{}, true, err
		}
		o.Runtime, o.ModelName, portText = oiptest.Custom, env["MODEL_NAME"], env["MODEL_PORT"]
	default:
		return modelServerSpec{}, true, fmt.Errorf("model container: command %q is no model server this runtime knows", c.Command)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 || port > 65535 {
		return modelServerSpec{}, true, fmt.Errorf("model container: port %q is not a TCP port", portText)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
		return modelServerSpec{}, true, fmt.Errorf("model container: the server listens on %d, which the container does not declare", port)
	}
	if probe := c.ReadinessProbe; probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != "/v2/health/ready" ||
		!slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return int(p.ContainerPort) == port && (probe.HTTPGet.Port.StrVal == p.Name || probe.HTTPGet.Port.IntValue() == port)
		}) {
		return modelServerSpec{}, true, fmt.Errorf("model container: the readiness probe must GET /v2/health/ready on the server's port %d", port)
	}
	if err := checkModelMounts(pod, c, env); err != nil {
		return modelServerSpec{}, true, err
	}
	return modelServerSpec{options: o, port: port}, true, nil
}

// checkModelMounts refuses what would stop the container: a mount of a
// volume the pod does not declare, and, with a read-only root filesystem,
// a cache or temporary directory outside every writable volume.
func checkModelMounts(pod *corev1.Pod, c *corev1.Container, env map[string]string) error {
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	var writable []string
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			return fmt.Errorf("model container: mount %s names volume %q, which the pod does not declare", m.MountPath, m.Name)
		}
		if !m.ReadOnly && v.EmptyDir != nil {
			writable = append(writable, m.MountPath)
		}
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		return nil
	}
	for _, name := range writableEnv {
		dir, set := env[name]
		if !set || dir == "" {
			continue
		}
		if !slices.ContainsFunc(writable, func(mount string) bool { return within(dir, mount) }) {
			return fmt.Errorf("model container: %s=%s is on the read-only root filesystem (writable volumes: %v)", name, dir, writable)
		}
	}
	return nil
}

func within(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// ModelServer is a running model sidecar: internal/oiptest's replica of
// the stock server the container names, on the pod's address.
type ModelServer struct {
	Runtime oiptest.Runtime
	Server  *oiptest.Server
	http    *http.Server
	URL     string
}

// startModelServer serves the spec on host and waits until its v2 ready
// endpoint answers, as the container's readiness probe would.
func startModelServer(spec modelServerSpec, host string) (*ModelServer, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(spec.port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("model server: %w", err)
	}
	s := oiptest.New(spec.options)
	m := &ModelServer{Runtime: spec.options.Runtime, Server: s, URL: "http://" + addr, http: &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = m.http.Serve(l) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(m.URL + "/v2/health/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
			err = fmt.Errorf("ready endpoint answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("model server on %s not ready: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop closes the server.
func (m *ModelServer) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.http.Shutdown(ctx)
}
