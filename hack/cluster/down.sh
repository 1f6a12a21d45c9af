#!/usr/bin/env bash
# `make cluster-down`: stops the cluster that up.sh started, or a killed run's leftovers:
# its containers, its processes, their mounts, the network namespace (and with it every
# address and iptables rule) and its state. Logs stay in /var/log/gitssh-cluster.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

quiet=false
[[ "${1:-}" == "--quiet" ]] && quiet=true

# Every process in the pods' cgroups (kubelet's cgroupRoot is /${netns}), then every
# process in the namespace: containerd, its shims, kubelet and the control plane.
kill_all() {
  local sig="$1" pids
  pids="$(find "/sys/fs/cgroup/pids/${netns}" -name cgroup.procs -exec cat {} + 2>/dev/null)"
  [[ -e "/run/netns/${netns}" ]] && pids+=" $(ip netns pids "${netns}" 2>/dev/null)"
  pids="$(echo ${pids})"
  [[ -n "${pids}" ]] && kill "-${sig}" ${pids} 2>/dev/null
  [[ -n "${pids}" ]]
}

stop_processes() {
  kill_all TERM || return 0
  local deadline=$((SECONDS + 10))
  while kill_all 0 && ((SECONDS < deadline)); do sleep 0.5; done
  kill_all KILL && sleep 1
}

unmount_all() {
  local m
  # Deepest first; pods' network namespaces are bind mounts under /run/netns named cni-*.
  grep -oE " (${state}|${run_dir})[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "${m}"; done
  for m in /run/netns/cni-*; do
    [[ -e "${m}" ]] || continue
    [[ -z "$(ip netns pids "${m##*/}" 2>/dev/null)" ]] && { umount -l "${m}" 2>/dev/null; rm -f "${m}"; }
  done
}

remove_cgroups() {
  local c
  for c in /sys/fs/cgroup/*/"${netns}"; do
    [[ -d "${c}" ]] && find "${c}" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

main() {
  if [[ ! -e "/run/netns/${netns}" && ! -d "${state}" ]] && ! ls -d /sys/fs/cgroup/*/"${netns}" >/dev/null 2>&1; then
    ${quiet} || log "no cluster to remove"
    return 0
  fi
  ${quiet} || log "removing the cluster in network namespace ${netns}"
  stop_processes
  unmount_all
  remove_cgroups
  ip netns delete "${netns}" 2>/dev/null
  rm -rf "${state}" "${run_dir}"
  ${quiet} || log "removed"
  return 0
}

main "$@"
