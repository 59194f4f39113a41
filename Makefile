# Attune — developer entry points. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION ?= v1.37.2
ENVTEST_ASSETS ?= $(shell hack/k8s-binaries.sh dir)
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
HELM ?= $(LOCALBIN)/helm
# golangci-lint is built with its own go.mod (go install pkg@version), as its
# authors advise, into a cache outside the repository.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/attune/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)
GO_TEST_FLAGS ?= -count=1
IMG ?= ghcr.io/attune-io/attune-operator:dev

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the API markers, and copy the CRDs into the chart.
	$(CONTROLLER_GEN) rbac:roleName=attune-manager crd:allowDangerousTypes=true paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	go run ./hack/chartgen

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml), e2e files included.
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	mkdir -p $(dir $@)/build-$(GOLANGCI_LINT_VERSION)
	GOBIN=$(dir $@)/build-$(GOLANGCI_LINT_VERSION) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(dir $@)/build-$(GOLANGCI_LINT_VERSION)/golangci-lint $@

.PHONY: verify
verify: manifests generate ## Fail when generated files, go.mod or formatting are stale.
	@go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed on:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@git diff --exit-code -- config api charts || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- config api charts)" || { echo "untracked generated files:"; git status --porcelain -- config api charts; exit 1; }

.PHONY: test
test: vet envtest-assets helm test-alerts ## Run go vet, unit tests and envtest integration tests (chart tests included).
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) HELM=$(HELM) go test $(GO_TEST_FLAGS) -timeout 20m ./...

.PHONY: test-alerts
test-alerts: ## Unit-test the chart's alerting rules with promtool (Debian's prometheus package).
	promtool check rules charts/attune/files/alerts.yaml
	promtool test rules test/alerts/alerts_test.yaml

.PHONY: envtest-assets
envtest-assets: ## Build etcd and kube-apiserver from source into the cache (once; ~10 min cold).
	hack/k8s-binaries.sh envtest

.PHONY: cluster-binaries
cluster-binaries: ## Also build kube-controller-manager, kube-scheduler and kwok (local cluster).
	hack/k8s-binaries.sh cluster

##@ Build

.PHONY: build
build: ## Build the manager and engine binaries into bin/.
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/engine ./cmd/engine

.PHONY: run
run: manifests ## Run the manager against the cluster in ~/.kube/config (install CRDs first: kubectl apply -f config/crd/bases).
	go run ./cmd/manager --leader-elect=false

##@ Benchmarks

# SIZE is the number of programs of bench-operator (5 worlds); each run keeps
# its figures and CPU/heap profiles in .attune/bench and sets its cost per
# program against the other sizes kept there.
SIZE ?= 500
# ROUNDS adds ROUNDS-1 pairs of floor and operator runs before the measured
# pair and prints the median operator/floor ratio of the pairs: on a shared
# machine the same writes cost the API server up to a third more from one
# minute to the next.
ROUNDS ?= 1

.PHONY: bench-operator
bench-operator: envtest-assets ## SIZE programs (500) across 5 worlds on envtest: time to Reconciled vs the floor (the operator's writes replayed; ROUNDS pairs), heap/RSS, idle writes; cost per program vs other sizes run.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) ATTUNE_BENCH=1 ATTUNE_BENCH_PROGRAMS=$(SIZE) ATTUNE_BENCH_ROUNDS=$(ROUNDS) ATTUNE_BENCH_OUT=$(CURDIR)/.attune/bench ATTUNE_BENCH_PROFILE=$(CURDIR)/.attune/bench \
		go test -count=1 -run '^$$' -bench BenchmarkOperatorReconcile -benchtime=1x -timeout 120m ./test/bench/

.PHONY: bench-operator-tuning
bench-operator-tuning: envtest-assets ## SIZE programs tuning every 60 s against a fake HTTPS engine: the operator's steady CPU, engine reads/s, writes/s.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) ATTUNE_BENCH=1 ATTUNE_BENCH_PROGRAMS=$(SIZE) ATTUNE_BENCH_PROFILE=$(CURDIR)/.attune/bench \
		go test -count=1 -run '^$$' -bench BenchmarkOperatorTuningLoad -benchtime=1x -timeout 60m ./test/bench/

##@ Tools

.PHONY: helm
helm: $(HELM)
$(HELM): hack/tools/go.mod
	cd hack/tools && go build -o $(HELM) helm.sh/helm/v3/cmd/helm

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN): hack/tools/go.mod
	cd hack/tools && go build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: bench-engine
bench-engine: ## Engine: ingest samples/s vs bare JSON decode; state and decision p50/p99 at 10k users (and bench-engine-scale at USERS); bytes/user; effect estimate over 1M logged decisions vs a bare scan; encryption at rest vs none (ingest, state p99); 100 texts in one model-server request vs one at a time.
	go test -count=1 -run '^$$' -bench 'Ingest|DecodeBaseline|StateRecommendation|Decision' -benchtime 3s -cpu 1 ./engine/service/
	go test -count=1 -run '^$$' -bench 'Effects1M|Effects1MSealed|ScanDecisions1M' -benchtime 3x -cpu 1 ./engine/service/
	go test -count=1 -run '^$$' -bench 'EncryptionCost' -benchtime 500x -cpu 1 ./engine/service/
	go test -count=1 -run '^$$' -bench . -benchtime 3x ./engine/effects/
	go test -count=1 -run '^$$' -bench 'BenchmarkScore(Batch100|OneAtATime100)$$' -benchtime 2s ./engine/textemotion/
	$(MAKE) bench-engine-scale

# USERS is the number of stored users of bench-engine-scale (the issue's
# 1,000,000 takes about 15 minutes and a 2.5 GB bbolt file; USERS=100000 is quick).
USERS ?= 1000000

.PHONY: bench-engine-scale
bench-engine-scale: ## Engine at USERS stored users (bbolt, bbolt without fsync, PostgreSQL): cohort read and scrape from the snapshot vs the full scan (ratio), refresh time, state/decision p50/p99, bytes/user on disk, heap/user, RSS; prior conflicts with 3 replicas, hot row vs merged arms.
	ATTUNE_BENCH_USERS=$(USERS) go test -count=1 -run '^$$' -bench 'BenchmarkScale(Bolt|BoltNoSync|Postgres)$$' -benchtime 1x -timeout 60m ./engine/service/
	go test -count=1 -run '^$$' -bench 'BenchmarkPriorConflicts3Replicas' -benchtime 5x ./engine/service/

.PHONY: bench-scaleout
bench-scaleout: ## Engines over HTTP: bbolt ×1 vs PostgreSQL ×1 and ×3 (ingest samples/s, state p50/p99), one run.
	go test -count=1 -run '^$$' -bench BenchmarkScaleOut -benchtime 1x -timeout 20m ./test/scaleout/

.PHONY: bench-capacity
bench-capacity: ## Capacity arithmetic of docs/scale-out.md: one engine on PostgreSQL measures the engine CPU, database CPU and connection time of an ingest and a read; per row of the doc's sizing table, the doc's utilisation vs Erlang C and a queueing simulation fed by them, one run.
	go test -count=1 -run '^$$' -bench BenchmarkCapacity -benchtime 1x -timeout 10m ./test/scaleout/
	go test -count=1 ./test/scaleout/queueing/

.PHONY: bench-group-commit
bench-group-commit: ## One engine (bbolt, encrypted) over HTTP with 8 and 64 concurrent ingest clients: durable (group commit) and one fsync per commit vs bbolt NoSync (ratios), one run.
	go test -count=1 -run '^$$' -bench BenchmarkDurableIngest -benchtime 1x -timeout 10m ./cmd/engine/

.PHONY: bench-tls
bench-tls: ## Ingest over HTTP without a token check (baseline) vs HTTP + token, HTTPS + token (connections reused) and HTTPS with a handshake per request, one run.
	go test -count=1 -run '^$$' -bench BenchmarkIngestTLS -benchtime 1x ./cmd/engine/

.PHONY: bench-tuning
bench-tuning: ## Tuner vs fixed strength, random search, SPSA, Nelder-Mead and CMA-ES on 9 scenario families: regret per family.
	go test -count=1 -run '^$$' -bench BenchmarkTuningScenarios -benchtime 1x ./test/tuningbench/

.PHONY: validate
validate: ## The simulated population through real in-process engines in accelerated time: estimate/truth correlation per dimension, effects' bias and 95% coverage, tuner convergence (about 2½ minutes).
	ATTUNE_VALIDATE=1 go test -count=1 -timeout 20m -run '^TestValidate$$' -v ./test/validate/

##@ Web client

WEB_DEPS := web/node_modules/.package-lock.json

$(WEB_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

.PHONY: web
web: $(WEB_DEPS) ## Build the reference web client into web/dist (TypeScript to ES modules; npm ci on first use).
	cd web && npm run build

.PHONY: test-web
test-web: web ## The web client in Debian's chromium against a real engine: consent, session, feedback, export, erasure, axe-core; screenshots in web/test-output.
	go build -o $(LOCALBIN)/engine ./cmd/engine
	cd web && ATTUNE_ENGINE_BINARY=$(LOCALBIN)/engine npm test

##@ Local cluster

.PHONY: test-e2e
test-e2e: cluster-binaries helm ## End-to-end tests on the local cluster (etcd, apiserver, controller manager, scheduler, kwok GPU nodes, real engines).
	ATTUNE_K8S_BIN=$(ENVTEST_ASSETS) HELM=$(HELM) go test -tags e2e -count=1 -timeout 20m -v ./test/e2e/

.PHONY: demo
demo: ## The whole system on this machine: local cluster, operator, GPU engines, simulated cohort, live tuning table.
	@echo "make demo: the first run builds the Kubernetes binaries from source (several minutes); later runs start in seconds."
	hack/k8s-binaries.sh cluster
	go build -o $(LOCALBIN)/engine ./cmd/engine
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory web; else echo "npm not found: the demo runs without the reference web client"; fi
	go run ./cmd/attune demo --k8s-bin $(ENVTEST_ASSETS) --engine-binary $(LOCALBIN)/engine $(DEMO_FLAGS)
