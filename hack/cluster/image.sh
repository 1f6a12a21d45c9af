#!/usr/bin/env bash
# `make image`: builds the project's Dockerfile with podman, on a Debian bookworm-slim-like
# base made here with debootstrap (no registry can be reached), and the pause image that
# containerd runs as each pod's sandbox. Writes both as docker archives into
# ${GITSSH_CLUSTER_IMAGES} for `ctr images import`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base_ref=docker.io/library/debian:bookworm-slim
base_tar="${cache_root}/images/debian-bookworm-minbase.tar"

# The Debian mirror apt already uses; debootstrap needs one and no other host is reachable.
debian_mirror() {
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } |
    grep -v security | head -1
}

build_base() {
  if [[ ! -s "${base_tar}" ]]; then
    need debootstrap debootstrap
    local root
    root="$(mktemp -d)"
    log "building the ${base_ref} base with debootstrap --variant=minbase (once, about 2 minutes)"
    debootstrap --variant=minbase bookworm "${root}" "$(debian_mirror)" >"${root}.log" 2>&1 ||
      die "debootstrap failed; see ${root}.log"
    # What the slim image drops, and apt's downloaded lists.
    rm -rf "${root}"/usr/share/{doc,man,info}/* "${root}"/var/lib/apt/lists/* "${root}"/var/cache/apt/*.bin
    mkdir -p "$(dirname "${base_tar}")"
    tar -C "${root}" --numeric-owner -cf "${base_tar}.tmp" . && mv "${base_tar}.tmp" "${base_tar}"
    rm -rf "${root}" "${root}.log"
  fi
  podman image exists "${base_ref}" ||
    podman import --change 'CMD ["bash"]' "${base_tar}" "${base_ref}" >/dev/null
}

build_pause() {
  local ctx
  ctx="$(mktemp -d)"
  gcc -static -O2 -o "${ctx}/pause" "${cluster_dir}/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"${ctx}/Dockerfile"
  podman build -q -t "${pause_image}" "${ctx}" >/dev/null
  rm -rf "${ctx}"
}

main() {
  # Before podman: Debian's podman pulls in crun, which fails here (containers.conf).
  need runc runc
  need podman podman
  need buildah buildah
  need gcc gcc
  local started=${SECONDS}
  mkdir -p "${images_dir}"
  build_base
  build_pause
  log "building ${gitssh_image} from Dockerfile"
  make -C "${repo_root}" --no-print-directory build git-source >/dev/null
  podman build --pull=never --network=host -t "${gitssh_image}" -f "${repo_root}/Dockerfile" "${repo_root}" >"${images_dir}/build.log" 2>&1 ||
    die "podman build failed; see ${images_dir}/build.log"
  local img
  for img in "${pause_image}" "${gitssh_image}"; do
    rm -f "${images_dir}/${img//[:\/]/_}.tar"
    podman save -q --format docker-archive -o "${images_dir}/${img//[:\/]/_}.tar" "${img}"
  done
  log "images built in $((SECONDS - started))s: ${gitssh_image}, ${pause_image}"
}

main "$@"
