#!/usr/bin/env bash
# `make cluster`: a single-node Kubernetes inside the network namespace ${netns} (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc + CNI bridge,
# kubelet, kube-proxy in iptables mode, MetalLB's controller), the image from `make image`
# imported, and the chart installed with `helm install`. Removes a previous run's leftovers
# first; on failure or Ctrl-C it tears down what it started. The last lines are the output
# contract: KUBECONFIG=, NETNS=, SSH_ADDRESS=, KNOWN_HOSTS=, then "gitssh cluster: ready".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "${cluster_dir}/certs.sh"
source "${cluster_dir}/node.sh"
source "${cluster_dir}/controlplane.sh"
source "${cluster_dir}/objects.sh"

release="${GITSSH_RELEASE:-gitssh}"
namespace="${GITSSH_NAMESPACE:-gitssh}"

main() {
  local started=${SECONDS} k8s
  need containerd containerd
  need runc runc
  need /usr/lib/cni/bridge containernetworking-plugins
  need iptables iptables
  need conntrack conntrack
  need nsenter util-linux
  need sysctl procps
  need openssl openssl
  need ssh-keyscan openssh-client
  log "building (once) or finding the Kubernetes v1.36 binaries and MetalLB"
  k8s="$(nice -n 10 "${repo_root}/hack/setup-envtest.sh" --cluster)"
  helm="$(make -C "${repo_root}" --no-print-directory -s print-helm)"
  [[ -s "${images_dir}/${gitssh_image//[:\/]/_}.tar" ]] || die "no image in ${images_dir}: run 'make image' first"

  "${cluster_dir}/down.sh" --quiet
  trap 'log "set-up failed or interrupted; tearing down (logs stay in ${logs})"; "${cluster_dir}/down.sh" --quiet' EXIT
  rm -rf "${logs}" && mkdir -p "${state}" "${run_dir}" "${logs}"
  make_certs
  start_network
  start_control_plane "${k8s}"
  start_containerd
  import_images
  start_node "${k8s}"
  start_metallb "${k8s}"
  make_storage "${k8s}"
  log "cluster up in $((SECONDS - started))s"
  install_chart "${k8s}" "${helm}"
  trap - EXIT
  log "set up in $((SECONDS - started))s; logs in ${logs}; remove with 'make cluster-down'"
  # Also kept in the state, for 'make e2e-run' against this cluster.
  {
    echo "KUBECONFIG=${state}/admin.kubeconfig"
    echo "NETNS=${netns}"
    echo "SSH_ADDRESS=${ssh_address}"
    echo "KNOWN_HOSTS=${state}/known_hosts"
  } | tee "${state}/cluster.env"
  echo "gitssh cluster: ready"
}

main "$@"
