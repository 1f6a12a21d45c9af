#!/usr/bin/env bash
# Builds the real control plane that tests and `make dev` run against: kube-apiserver and
# kubectl from k8s.io/kubernetes, and etcd from go.etcd.io/etcd/server/v3, all from the Go
# module proxy (no prebuilt binaries can be downloaded here).
#
# The binaries go into a per-user cache outside the clone, so every clone on this machine
# shares one build, and are linked as bin/k8s. A second run finds them and does nothing.
# Prints the directory to use as KUBEBUILDER_ASSETS on its last line.
#
# With --cluster it also builds what a real node needs (hack/cluster): kubelet, kube-proxy,
# kube-controller-manager and kube-scheduler from the same k8s.io/kubernetes version, into
# the same directory, and MetalLB's controller (go.universe.tf/metallb).
set -euo pipefail

cluster=false
[[ "${1:-}" == "--cluster" ]] && cluster=true
METALLB_VERSION="${METALLB_VERSION:-0.15.2}"

K8S_VERSION="${K8S_VERSION:-1.36.3}"   # k8s.io/kubernetes v1.36.3
STAGING_VERSION="0.${K8S_VERSION#1.}"  # k8s.io/* staging modules: v0.36.3
ETCD_VERSION="${ETCD_VERSION:-3.6.6}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${GITSSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gitssh}"
assets="${cache_root}/k8s/v${K8S_VERSION}-etcd${ETCD_VERSION}"

log() { echo "setup-envtest: $*" >&2; }

link_into_clone() {
  mkdir -p "${repo_root}/bin"
  ln -sfn "${assets}" "${repo_root}/bin/k8s"
}

envtest_bins=(kube-apiserver kubectl)
cluster_bins=(kubelet kube-proxy kube-controller-manager kube-scheduler)
wanted=("${envtest_bins[@]}")
${cluster} && wanted+=("${cluster_bins[@]}")

missing() {
  local b
  for b in "$@"; do [[ -x "${assets}/${b}" ]] || return 0; done
  return 1
}

metallb_missing() { missing metallb-controller || [[ ! -d "${assets}/metallb-rbac" ]]; }

if ! missing etcd "${wanted[@]}" && ! { ${cluster} && metallb_missing; }; then
  link_into_clone
  echo "${assets}"
  exit 0
fi

mkdir -p "${assets}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

# Unstamped builds report v0.0.0, which breaks version checks such as Helm's kubeVersion.
version_ldflags() {
  local major="${K8S_VERSION%%.*}" rest="${K8S_VERSION#*.}" minor
  minor="${rest%%.*}"
  local flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=v${K8S_VERSION}"
    flags+=" -X ${pkg}.gitMajor=${major}"
    flags+=" -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean"
    flags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w ${flags}"
}

build_kubernetes() {
  local dir="${work}/kubernetes"
  mkdir -p "${dir}"
  cd "${dir}"
  go mod init gitssh.dev/throwaway/kubernetes >/dev/null 2>&1
  # k8s.io/kubernetes points every staging module at ./staging; outside its own tree those
  # paths do not exist, so replace each one with its published vX.Y version instead.
  local kube_mod
  kube_mod="$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  {
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 v'"${STAGING_VERSION}"'#p' "${kube_mod}"
    echo ")"
  } >> go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${wanted[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${b}"; done
    printf ')\n'
  } > tools.go
  log "resolving k8s.io/kubernetes v${K8S_VERSION} dependencies"
  go mod tidy -e >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}" >/dev/null 2>&1 || true
  local ldflags
  ldflags="$(version_ldflags)"
  local b
  for b in "${wanted[@]}"; do
    [[ -x "${assets}/${b}" ]] && continue
    log "building ${b} v${K8S_VERSION} (minutes on 2 cores, once)"
    go build -trimpath -ldflags "${ldflags}" -o "${assets}/${b}.tmp" "k8s.io/kubernetes/cmd/${b}"
    mv "${assets}/${b}.tmp" "${assets}/${b}"
  done
}

# MetalLB's controller assigns LoadBalancer addresses from an IPAddressPool; it runs as a
# process with a kubeconfig, like the control plane. Its CRDs and RBAC come from the same
# module.
build_metallb() {
  local dir="${work}/metallb"
  mkdir -p "${dir}"
  cd "${dir}"
  go mod init gitssh.dev/throwaway/metallb >/dev/null 2>&1
  log "building MetalLB controller v${METALLB_VERSION}"
  go get "go.universe.tf/metallb@v${METALLB_VERSION}" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "${assets}/metallb-controller.tmp" go.universe.tf/metallb/controller
  local mod
  mod="$(go list -m -f '{{.Dir}}' go.universe.tf/metallb)"
  rm -rf "${assets}/metallb-crds" "${assets}/metallb-rbac"
  mkdir -p "${assets}/metallb-crds" "${assets}/metallb-rbac"
  cp "${mod}"/config/crd/bases/*.yaml "${assets}/metallb-crds/"
  # Its ServiceAccounts and RBAC, in the namespace its own kustomization would set.
  cp "${mod}"/config/rbac/{role,service-accounts}.yaml "${assets}/metallb-rbac/"
  printf 'namespace: metallb-system\nresources: [role.yaml, service-accounts.yaml]\n' >"${assets}/metallb-rbac/kustomization.yaml"
  mv "${assets}/metallb-controller.tmp" "${assets}/metallb-controller"
}

build_etcd() {
  local dir="${work}/etcd"
  mkdir -p "${dir}"
  cd "${dir}"
  go mod init gitssh.dev/throwaway/etcd >/dev/null 2>&1
  log "building etcd v${ETCD_VERSION}"
  go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "${assets}/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "${assets}/etcd.tmp" "${assets}/etcd"
}

[[ -x "${assets}/etcd" ]] || build_etcd
missing "${wanted[@]}" && build_kubernetes
if ${cluster} && metallb_missing; then build_metallb; fi

link_into_clone
log "control plane ready in ${assets}"
echo "${assets}"
