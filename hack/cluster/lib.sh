# Shared by hack/cluster/*.sh: where things live and small helpers. Sourced, not run.
# shellcheck shell=bash

cluster_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${cluster_dir}/../.." && pwd)"
cache_root="${GITSSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gitssh}"

# One cluster per machine: its processes, state and network namespace have fixed names so
# that the next run (or `make cluster-down`) finds a killed run's leftovers.
netns="${GITSSH_NETNS:-gitssh-e2e}"
state="${GITSSH_CLUSTER_STATE:-/var/lib/gitssh-cluster}"
run_dir="/run/gitssh-cluster"
images_dir="${GITSSH_CLUSTER_IMAGES:-${cache_root}/images/out}"
export CONTAINERS_CONF="${cluster_dir}/containers.conf"

gitssh_image="${GITSSH_IMAGE:-localhost/gitssh:e2e}"
pause_image="localhost/pause:gitssh"

# Addresses exist only inside ${netns}: kind's defaults for the pod and Service ranges, a
# node on a veth pair whose peer is also in the namespace, and a MetalLB pool beside it.
node_name=gitssh-node
node_ip=172.18.0.2
node_gw=172.18.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16
api_service_ip=10.96.0.1
dns_ip=10.96.0.10
lb_pool=172.18.255.200-172.18.255.250

log() { echo "gitssh cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# need CMD PACKAGE: installs the Debian package when CMD is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing Debian package $2 (for $1)"
  if [[ -z "${apt_updated:-}" ]]; then
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null ||
    die "apt-get install $2 failed; install it by hand and run again"
}

in_netns() { nsenter --net="/run/netns/${netns}" "$@"; }

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what="$1" limit="$2" deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "${what} was not ready after ${limit}s; see the logs in ${state}/logs"
    sleep 0.5
  done
}
