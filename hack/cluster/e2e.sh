#!/usr/bin/env bash
# `make e2e`: the cluster of up.sh, the tests in test/e2e (build tag e2e) run inside its
# network namespace, then teardown, also after a failure or Ctrl-C.
# `make e2e-run` (--kept): the same tests against the cluster a 'make cluster' left up,
# which stays up; arguments, and E2E_ARGS split at spaces, go to the test binary
# (make e2e-run E2E_ARGS='-test.run TestInstall|TestCloneAndPush').
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out="$(mktemp)"
test_bin="${repo_root}/bin/e2e.test"

main() {
  local kept=false
  [[ "${1:-}" == "--kept" ]] && { kept=true; shift; }
  local extra=()
  read -ra extra <<<"${E2E_ARGS:-}"
  set -- "$@" "${extra[@]}"
  if ${kept}; then
    trap 'rm -f "${out}"' EXIT
    [[ -s "${state}/cluster.env" && -e "/run/netns/${netns}" ]] ||
      die "no cluster is up: run 'make cluster' first (it keeps its address in ${state}/cluster.env)"
    cp "${state}/cluster.env" "${out}"
  else
    trap '"${cluster_dir}/down.sh" --quiet; rm -f "${out}"' EXIT
  fi
  # Compiled outside the namespace, where the module cache and proxy are.
  go test -c -tags e2e -o "${test_bin}" "${repo_root}/test/e2e"
  if ! ${kept}; then
    "${cluster_dir}/up.sh" | tee "${out}"
    grep -qx 'gitssh cluster: ready' "${out}" || die "the cluster did not come up"
  fi
  # KUBECONFIG, NETNS, SSH_ADDRESS, KNOWN_HOSTS: the output contract of up.sh.
  set -a
  source <(grep -E '^(KUBECONFIG|NETNS|SSH_ADDRESS|KNOWN_HOSTS)=' "${out}")
  set +a
  export KUBECTL="${repo_root}/bin/k8s/kubectl" GITSSH_CHART="${repo_root}/charts/gitssh" GITSSH_IMAGE="${gitssh_image}"
  (cd "${repo_root}/test/e2e" && in_netns "${test_bin}" -test.v -test.timeout=30m "$@")
}

main "$@"
