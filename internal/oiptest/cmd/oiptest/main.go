// Command oiptest serves internal/oiptest's fake Open Inference Protocol
// model server, e.g. as the engine's model sidecar in a local cluster:
//
//	go run ./internal/oiptest/cmd/oiptest --runtime=kserve-hf --port=8080
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/attune-io/attune/internal/oiptest"
)

func main() {
	runtime := flag.String("runtime", string(oiptest.KServeHuggingFace), "Server to imitate: kserve-hf, triton, mlserver-hf or custom.")
	port := flag.Int("port", 8080, "TCP port to listen on.")
	host := flag.String("host", "0.0.0.0", "Address to listen on.")
	model := flag.String("model-name", "emotion", "Model name served under /v2/models/{name}.")
	labels := flag.String("labels", strings.Join(oiptest.EkmanLabels, ","), "Comma-separated class labels by index.")
	latency := flag.Duration("latency", 0, "Delay of every inference answer.")
	probabilities := flag.Bool("return_probabilities", false, "KServe: answer softmax probabilities as dict reprs.")
	rawLogits := flag.Bool("return_raw_logits", false, "KServe: answer raw logits as dict reprs.")
	tritonLabels := flag.Bool("triton-labels", true, "Triton: classification strings carry labels.")
	allScores := flag.Bool("all-scores", false, "MLServer: return every class's score (top_k=None).")
	fault := flag.String("fault", "", "Fault to inject: 500, 503, malformed, wrong-count, fp32-class-index, wrong-datatype, hang.")
	flag.Parse()
	if !slices.Contains(oiptest.Runtimes, oiptest.Runtime(*runtime)) {
		fmt.Fprintf(os.Stderr, "oiptest: unknown --runtime %q (want one of %v)\n", *runtime, oiptest.Runtimes)
		os.Exit(2)
	}
	s := oiptest.New(oiptest.Options{
		Runtime: oiptest.Runtime(*runtime), ModelName: *model, Labels: strings.Split(*labels, ","), Latency: *latency,
		ReturnProbabilities: *probabilities, ReturnRawLogits: *rawLogits, TritonLabels: *tritonLabels, MLServerAllScores: *allScores,
	})
	s.SetFault(oiptest.Fault(*fault))
	addr := net.JoinHostPort(*host, strconv.Itoa(*port))
	log.Printf("oiptest: %s model %q on %s", *runtime, *model, addr)
	srv := &http.Server{Addr: addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
