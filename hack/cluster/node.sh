# The node: the network namespace, containerd + runc + CNI, kubelet and kube-proxy, each a
# process inside ${netns} started the way its operators run it.
# Sourced by up.sh.
# shellcheck shell=bash

logs="/var/log/gitssh-cluster"

# start NAME CMD...: runs CMD in the network namespace, logging to ${logs}/NAME.log.
start() {
  local name="$1"
  shift
  in_netns setsid "$@" >"${logs}/${name}.log" 2>&1 </dev/null &
  echo $! >"${run_dir}/${name}.pid"
}


start_network() {
  ip netns add "${netns}"
  # The node's address sits on one end of a veth pair whose other end stays in the
  # namespace too: there is no way out, so nothing is sent beyond it.
  in_netns ip link set lo up
  in_netns ip link add eth0 type veth peer name eth0-peer
  in_netns ip addr add "${node_ip}/16" dev eth0
  in_netns ip link set eth0 up
  in_netns ip link set eth0-peer up
  in_netns ip route add default via "${node_gw}" dev eth0 onlink
  in_netns sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

start_containerd() {
  mkdir -p "${state}/cni"
  cat >"${state}/cni/10-gitssh.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "gitssh", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "${pod_cidr}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  # restrict_oom_score_adj: the sandbox lacks CAP_SYS_RESOURCE, and runc fails every
  # container whose oom_score_adj would be lowered. sandbox_image: imported, never pulled.
  cat >"${state}/containerd.toml" <<TOML
version = 2
root = "${state}/containerd"
state = "${run_dir}/containerd"
[grpc]
  address = "${run_dir}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pause_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${state}/cni"
TOML
  start containerd containerd --config="${state}/containerd.toml"
  wait_for containerd 60 ctr --address="${run_dir}/containerd.sock" version
}

import_images() {
  local tar
  for tar in "${images_dir}"/*.tar; do
    ctr --address="${run_dir}/containerd.sock" -n k8s.io images import --no-unpack=false "${tar}" >/dev/null ||
      die "importing ${tar} into containerd failed"
  done
}

# kubelet requires its cgroupRoot to exist in every hierarchy; a new cpuset cgroup starts
# with no CPUs or memory nodes, so it gets its parent's.
make_cgroup_root() {
  local c
  for c in /sys/fs/cgroup/*/; do mkdir -p "${c}${netns}"; done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/${netns}/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/${netns}/cpuset.mems"
}

start_node() {
  local k8s="$1"
  mkdir -p "${state}/kubelet"
  make_cgroup_root
  # cgroup v1 (hybrid) here: failCgroupV1 false and the cgroupfs driver (there is no systemd).
  # No cluster DNS runs; pods get the node's resolv.conf. Pods' cgroups go under
  # /${netns} so that down.sh finds their processes.
  cat >"${state}/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${node_ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: ${pki}/kubelet-serving.crt
tlsPrivateKeyFile: ${pki}/kubelet-serving.key
containerRuntimeEndpoint: unix://${run_dir}/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /${netns}
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
# Containers' logs outlive the cluster, for a failed run's post-mortem.
podLogsDir: ${logs}/pods
# The images were imported and cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
YAML
  start kubelet "${k8s}/kubelet" --config="${state}/kubelet.yaml" --kubeconfig="${state}/kubelet.kubeconfig" \
    --root-dir="${state}/kubelet" --hostname-override="${node_name}" --node-ip="${node_ip}"
  cat >"${state}/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: ${state}/kube-proxy.kubeconfig}
hostnameOverride: ${node_name}
clusterCIDR: ${pod_cidr}
bindAddress: ${node_ip}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
YAML
  start kube-proxy "${k8s}/kube-proxy" --config="${state}/kube-proxy.yaml"
  wait_for "node ${node_name}" 120 in_netns "${k8s}/kubectl" --kubeconfig="${state}/admin.kubeconfig" \
    wait --for=condition=Ready "node/${node_name}" --timeout=2s
}
