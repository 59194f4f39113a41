#!/usr/bin/env bash
# Builds pinned Kubernetes control-plane binaries from source through the Go
# module proxy, because setup-envtest, kind and release downloads cannot reach
# anything from our CI machines. Idempotent: a binary already in the cache is
# kept. Usage:
#
#   hack/k8s-binaries.sh envtest        # etcd + kube-apiserver (what envtest needs)
#   hack/k8s-binaries.sh cluster        # + kube-controller-manager, kube-scheduler, kubectl, kwok
#   hack/k8s-binaries.sh dir            # print the cache directory and exit
#
# The cache lives outside the repository so a fresh clone reuses it.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${ATTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attune}"
BIN_DIR="${CACHE_ROOT}/k8s/${K8S_VERSION}"
WORK_DIR="${CACHE_ROOT}/build"

log() { printf '[k8s-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build_tool builds a binary whose module cannot be `go install`ed (its
# go.mod has replace directives) from a throwaway module that requires it.
build_tool() {
  local name="$1" pkg="$2" version="$3" minutes="$4"
  [[ -x "${BIN_DIR}/${name}" ]] && { log "${name} ${version}: cached"; return; }
  log "${name} ${version}: building (about ${minutes} minutes cold)"
  local mod="${WORK_DIR}/${name}-${version}"
  mkdir -p "${mod}"
  (
    cd "${mod}"
    [[ -f go.mod ]] || go mod init "attune.local/${name}-build" >/dev/null 2>&1
    go get -tool "${pkg}@${version}"
    go build -trimpath -o "${BIN_DIR}/${name}.tmp" "${pkg}"
  )
  mv "${BIN_DIR}/${name}.tmp" "${BIN_DIR}/${name}"
  log "${name}: done"
}

build_etcd() { build_tool etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" 2; }

# kubernetes_module prepares one throwaway module that requires k8s.io/kubernetes
# and replaces each staging module (which k8s.io/kubernetes points at ./staging)
# with its published version.
kubernetes_module() {
  local mod="${WORK_DIR}/kubernetes-${K8S_VERSION}"
  # .ready-v2: the module also lists kubectl (older caches lack it).
  if [[ -f "${mod}/.ready-v2" ]]; then echo "${mod}"; return; fi
  log "kubernetes ${K8S_VERSION}: preparing module (downloads sources)"
  mkdir -p "${mod}"
  (
    cd "${mod}"
    rm -f go.mod go.sum
    go mod init attune.local/kubernetes-build >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
      echo "require k8s.io/kubernetes ${K8S_VERSION}"
      grep -E '^\s*k8s\.io/[^ ]+ => \./staging/src/' "${gomod}" |
        awk -v v="${STAGING_VERSION}" '{print "replace " $1 " => " $1 " " v}'
    } >> go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy
    touch .ready-v2
  ) >&2
  echo "${mod}"
}

build_kube() {
  local name="$1" minutes="$2"
  [[ -x "${BIN_DIR}/${name}" ]] && { log "${name} ${K8S_VERSION}: cached"; return; }
  local mod
  mod="$(kubernetes_module)"
  log "${name} ${K8S_VERSION}: building (about ${minutes} minutes cold on 2 cores)"
  local pkg="k8s.io/component-base/version"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  (cd "${mod}" && go build -trimpath -ldflags "${ldflags}" -o "${BIN_DIR}/${name}.tmp" "k8s.io/kubernetes/cmd/${name}")
  mv "${BIN_DIR}/${name}.tmp" "${BIN_DIR}/${name}"
  log "${name}: done"
}

build_kwok() { build_tool kwok sigs.k8s.io/kwok/cmd/kwok "${KWOK_VERSION}" 6; }

mkdir -p "${BIN_DIR}" "${WORK_DIR}"
case "${1:-envtest}" in
  dir) echo "${BIN_DIR}" ;;
  envtest)
    build_etcd
    build_kube kube-apiserver 9
    log "envtest assets ready in ${BIN_DIR}"
    ;;
  cluster)
    build_etcd
    build_kube kube-apiserver 9
    build_kube kube-controller-manager 4
    build_kube kube-scheduler 3
    build_kube kubectl 2
    build_kwok
    log "cluster binaries ready in ${BIN_DIR}"
    ;;
  *) echo "usage: $0 envtest|cluster|dir" >&2; exit 2 ;;
esac
