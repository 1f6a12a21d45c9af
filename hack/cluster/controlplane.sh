# etcd, kube-apiserver, kube-controller-manager and kube-scheduler, each a process in
# ${netns} with the flags its operators use. Sourced by up.sh; start() is node.sh's.
# shellcheck shell=bash

start_control_plane() {
  local k8s="$1"
  start etcd "${k8s}/etcd" --data-dir="${state}/etcd" --listen-client-urls=http://127.0.0.1:2379 \
    --advertise-client-urls=http://127.0.0.1:2379 --listen-peer-urls=http://127.0.0.1:2380 \
    --unsafe-no-fsync=true
  start kube-apiserver "${k8s}/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="${node_ip}" \
    --tls-cert-file="${pki}/apiserver.crt" --tls-private-key-file="${pki}/apiserver.key" \
    --client-ca-file="${pki}/ca.crt" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --service-cluster-ip-range="${service_cidr}" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${pki}/sa.pub" --service-account-signing-key-file="${pki}/sa.key" \
    --kubelet-client-certificate="${pki}/admin.crt" --kubelet-client-key="${pki}/admin.key" \
    --kubelet-preferred-address-types=InternalIP
  wait_for kube-apiserver 120 in_netns "${k8s}/kubectl" --kubeconfig="${state}/admin.kubeconfig" get --raw=/readyz
  start kube-controller-manager "${k8s}/kube-controller-manager" \
    --kubeconfig="${state}/controller-manager.kubeconfig" \
    --authentication-kubeconfig="${state}/controller-manager.kubeconfig" \
    --authorization-kubeconfig="${state}/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="${pki}/ca.crt" --cluster-signing-key-file="${pki}/ca.key" \
    --root-ca-file="${pki}/ca.crt" --service-account-private-key-file="${pki}/sa.key" \
    --service-cluster-ip-range="${service_cidr}"
  start kube-scheduler "${k8s}/kube-scheduler" --kubeconfig="${state}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${state}/scheduler.kubeconfig" \
    --authorization-kubeconfig="${state}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
}
