# What the cluster needs besides its processes: MetalLB, storage, and the chart installed.
# Sourced by up.sh.
# shellcheck shell=bash

kubectl_() { in_netns "${k8s}/kubectl" --kubeconfig="${state}/admin.kubeconfig" "$@"; }

# MetalLB's controller assigns Service addresses from the pool and writes
# status.loadBalancer.ingress. Its speaker, which answers ARP for them on a LAN, is not
# needed: the only client is inside the namespace, where kube-proxy's rules route the
# address to the pod.
start_metallb() {
  local k8s="$1"
  kubectl_ create namespace metallb-system >/dev/null
  kubectl_ apply --server-side -f "${k8s}/metallb-crds" >/dev/null
  wait_for "MetalLB CRDs" 60 kubectl_ wait --for=condition=Established crd/ipaddresspools.metallb.io --timeout=2s
  kubectl_ apply -f - >/dev/null <<YAML
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: gitssh-e2e, namespace: metallb-system}
spec: {addresses: ["${lb_pool}"]}
YAML
  # As its Deployment runs it: as ServiceAccount metallb-system/controller, with its RBAC.
  kubectl_ apply -k "${k8s}/metallb-rbac" >/dev/null
  local token
  token="$(kubectl_ -n metallb-system create token controller --duration=48h)"
  sed -e '/client-certificate:/d' -e "s|client-key: .*|token: ${token}|" "${state}/admin.kubeconfig" >"${state}/metallb.kubeconfig"
  KUBECONFIG="${state}/metallb.kubeconfig" start metallb-controller "${k8s}/metallb-controller" \
    --namespace=metallb-system --webhook-mode=disabled --port=7472 --log-level=info
}

# The default StorageClass: hostPath volumes made here, world-writable as kind's
# local-path provisioner makes them (hostPath volumes get no fsGroup ownership change).
make_storage() {
  local k8s="$1" i
  kubectl_ apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
YAML
  for i in 1 2 3 4; do
    mkdir -p "${state}/volumes/pv${i}" && chmod 0777 "${state}/volumes/pv${i}"
    kubectl_ apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv${i}}
spec:
  storageClassName: standard
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: ${state}/volumes/pv${i}, type: Directory}
YAML
  done
}

# install_chart K8S HELM: `helm install` with the chart's defaults but the image; sets
# ssh_address and writes ${state}/known_hosts from the published ConfigMap.
install_chart() {
  local k8s="$1" helm="$2" repo="${gitssh_image%:*}" tag="${gitssh_image##*:}"
  log "helm install ${release} (image ${gitssh_image})"
  KUBECONFIG="${state}/admin.kubeconfig" in_netns "${helm}" install "${release}" "${repo_root}/charts/gitssh" \
    --namespace "${namespace}" --create-namespace --set image.repository="${repo}" \
    --set image.tag="${tag}" --wait --timeout 5m >"${logs}/helm-install.log" 2>&1 ||
    die "helm install failed; see ${logs}/helm-install.log and 'kubectl describe pods -n ${namespace}'"
  local ip port
  wait_for "the LoadBalancer address" 60 in_netns sh -c "[ -n \"\$(${k8s}/kubectl --kubeconfig=${state}/admin.kubeconfig -n ${namespace} get svc ${release} -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null)\" ]"
  ip="$(kubectl_ -n "${namespace}" get svc "${release}" -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"
  port="$(kubectl_ -n "${namespace}" get svc "${release}" -o jsonpath='{.spec.ports[0].port}')"
  ssh_address="${ip}:${port}"
  # gitssh writes the Service's address into known_hosts once MetalLB has assigned it.
  wait_for "the known_hosts ConfigMap" 60 in_netns sh -c "${k8s}/kubectl --kubeconfig=${state}/admin.kubeconfig -n ${namespace} get configmap gitssh-host-keys-known-hosts -o jsonpath='{.data.known_hosts}' | grep -qF '${ip}'"
  kubectl_ -n "${namespace}" get configmap gitssh-host-keys-known-hosts -o jsonpath='{.data.known_hosts}' >"${state}/known_hosts"
}
