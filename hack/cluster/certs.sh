# Certificates and kubeconfigs for the cluster, made with openssl. Sourced by up.sh.
# shellcheck shell=bash

pki="${state}/pki"

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA.
cert() {
  local name="$1" cn="$2" o="${3:-}" sans="${4:-}" subj="/CN=$2"
  [[ -n "${o}" ]] && subj="/O=${o}/CN=${cn}"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "${subj}" \
    -keyout "${pki}/${name}.key" -out "${pki}/${name}.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "${sans}" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=${sans}"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"${pki}/${name}.ext"
  openssl x509 -req -in "${pki}/${name}.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "${pki}/${name}.ext" -out "${pki}/${name}.crt" 2>/dev/null
  rm -f "${pki}/${name}.csr" "${pki}/${name}.ext"
}

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
  cat >"${state}/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: gitssh-e2e
  cluster:
    server: https://${node_ip}:6443
    certificate-authority: ${pki}/ca.crt
users:
- name: $1
  user:
    client-certificate: ${pki}/$1.crt
    client-key: ${pki}/$1.key
contexts:
- name: gitssh-e2e
  context: {cluster: gitssh-e2e, user: $1}
current-context: gitssh-e2e
KC
}

make_certs() {
  mkdir -p "${pki}"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=gitssh-e2e-ca" -keyout "${pki}/ca.key" -out "${pki}/ca.crt" 2>/dev/null
  openssl genrsa -out "${pki}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null
  cert apiserver kube-apiserver "" "IP:${node_ip},IP:${api_service_ip},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert kubelet-serving "${node_name}" "" "IP:${node_ip},DNS:${node_name}"
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kubelet "system:node:${node_name}" system:nodes
  cert kube-proxy system:kube-proxy
  local k
  for k in admin controller-manager scheduler kubelet kube-proxy; do kubeconfig "${k}"; done
}
