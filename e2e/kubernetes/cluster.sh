#!/usr/bin/env bash
# A single-node Kubernetes cluster from real components, for the tests and for trying the
# manifests of configs/kubernetes/ by hand (run as root):
#
#   e2e/kubernetes/cluster.sh up      builds what is missing (cached), starts etcd, containerd
#                                     2.3 with the spright runtime, kube-apiserver,
#                                     kube-controller-manager, kube-scheduler, kubelet and
#                                     kube-proxy, waits for the node to be Ready, imports the
#                                     images of target/images/ into k8s.io and prints
#                                     `export KUBECONFIG=...` and `export PATH=...` lines
#   e2e/kubernetes/cluster.sh images  imports target/images/*.tar again (after a rebuild)
#   e2e/kubernetes/cluster.sh down    deletes every pod (so CNI and the shims clean up), stops
#                                     everything and removes what the cluster left: processes,
#                                     mounts, network namespaces, the bridge, iptables rules,
#                                     cgroups, leases and the state directory, and puts back the
#                                     sysctls the kubelet and CNI changed
#
# Everything is private: state in $SPRIGHT_K8S_DIR (/var/lib/spright-kubernetes), a containerd
# of its own (own root, state and sockets; runc keeps its state under /run/containerd/runc/k8s.io
# like any CRI containerd's), its own CNI configuration and bridge (spright-k8s0, 10.244.0.0/24),
# service network 10.96.0.0/24. A system containerd, if any, is neither used nor touched.
#
# The spright shim comes from $SPRIGHT_SHIM_DIR (default target/debug of this checkout, built
# by `cargo build --workspace --bins`); containerd from e2e/containerd/fetch.sh 2.3, Kubernetes
# from e2e/kubernetes/fetch.sh. The containerd configuration is configs/containerd/
# spright-runtime-2.x.toml (what a user merges into theirs) followed by this node's own tables.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/kubernetes/versions
. "$here/versions"
CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
DIR=${SPRIGHT_K8S_DIR:-/var/lib/spright-kubernetes}
SHIM_DIR=${SPRIGHT_SHIM_DIR:-$repo/target/debug}
K8S_BIN=$CACHE/kubernetes/$KUBERNETES_VERSION/bin
CONTAINERD_SERIES=2.3
BRIDGE=spright-k8s0
NETWORK=spright-k8s
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/24
API_PORT=6443
ETCD_PORT=23790
ETCD_PEER_PORT=23800
# Host settings the kubelet (kernel.*, vm.*) and the bridge plugin (ip_forward) change.
HOST_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward)
# How long `up` waits for each component, in seconds.
WAIT=${SPRIGHT_K8S_WAIT:-120}

say() { echo "cluster: $*" >&2; }
die() {
  say "$*"
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root"

containerd_dir() {
  local v
  v=$(awk -v s="$CONTAINERD_SERIES" '$1 == s { print $3 }' "$repo/e2e/containerd/versions")
  [ -n "$v" ] || die "no $CONTAINERD_SERIES line in e2e/containerd/versions"
  echo "$CACHE/containerd/$v/bin"
}

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$DIR/pki/admin.kubeconfig" "$@"; }

# Waits until the command succeeds, at most $WAIT seconds; on time-out names what it waited for
# and shows the end of that component's log.
wait_for() {
  local what=$1 logname=$2
  shift 2
  local deadline=$(($(date +%s) + WAIT))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "timed out after ${WAIT}s waiting for $what; last lines of $DIR/log/$logname.log:"
      tail -n 25 "$DIR/log/$logname.log" 2>/dev/null | sed 's/^/    /' >&2
      exit 1
    fi
    sleep 0.5
  done
}

# Starts a component in the background with its log in $DIR/log/<name>.log and its pid in
# $DIR/run/<name>.pid; it dies with `down`, not with this shell.
start() {
  local name=$1
  shift
  setsid "$@" >"$DIR/log/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
}

alive() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

node_ip() {
  ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1
}

# ---- certificates and kubeconfigs ----
cert() { # name CN O [SANs]
  local name=$1 cn=$2 o=$3 sans=${4:-}
  local ext="$DIR/pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$DIR/pki/$name.key" \
    -subj "/CN=$cn${o:+/O=$o}" -out "$DIR/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$DIR/pki/$name.crt" 2>/dev/null
  rm -f "$DIR/pki/$name.csr" "$ext"
}
kubeconfig() { # name
  local name=$1
  cat >"$DIR/pki/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: spright
  cluster: {certificate-authority: $DIR/pki/ca.crt, server: "https://$NODE_IP:$API_PORT"}
users:
- name: $name
  user: {client-certificate: $DIR/pki/$name.crt, client-key: $DIR/pki/$name.key}
contexts:
- name: spright
  context: {cluster: spright, user: $name}
current-context: spright
EOF
}
make_pki() {
  mkdir -p "$DIR/pki"
  chmod 700 "$DIR/pki"
  openssl req -x509 -new -newkey rsa:2048 -nodes -days 30 -subj "/CN=spright-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$DIR/pki/ca.key" -out "$DIR/pki/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert etcd etcd "" "IP:127.0.0.1,DNS:localhost"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert kubelet "system:node:$NODE" system:nodes "DNS:$NODE,IP:$NODE_IP"
  openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  for c in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$c"; done
}

# ---- containerd 2.3 with the spright runtime ----
containerd_config() {
  # The user's snippet first (it opens with `version = 3`), then this node's tables.
  cat "$repo/configs/containerd/spright-runtime-2.x.toml"
  cat <<EOF

root = "$DIR/containerd/root"
state = "$DIR/containerd/state"

[grpc]
  address = "$DIR/run/containerd.sock"
[ttrpc]
  address = "$DIR/run/containerd.sock.ttrpc"
[debug]
  address = "$DIR/run/containerd.sock.debug"

# NRI would take over the host's /var/run/nri/nri.sock and load /opt/nri/plugins.
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "spright.local/pause:latest"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$DIR/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
}
cni_config() {
  cat <<EOF
{"cniVersion": "1.0.0", "name": "$NETWORK", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
}

kubelet_config() {
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# Hosts here are cgroup v1 (hybrid); 1.35 and later refuse v1 unless told.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$DIR/run/containerd.sock
podLogsDir: $DIR/pod-logs
tlsCertFile: $DIR/pki/kubelet.crt
tlsPrivateKeyFile: $DIR/pki/kubelet.key
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Test images are imported, never pulled.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOF
}

kube_proxy_config() {
  cat <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/pki/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE
# Leave the host's conntrack sysctls and route_localnet alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
}

up() {
  if [ -f "$DIR/up" ]; then
    alive kube-apiserver && alive kubelet || die "a cluster in $DIR is half up: run '$0 down' first"
    say "already up"
    print_env
    return
  fi
  [ ! -e "$DIR" ] || die "$DIR exists from an earlier cluster: run '$0 down' first"
  "$repo/e2e/containerd/fetch.sh" "$CONTAINERD_SERIES" >&2
  "$here/fetch.sh" >&2
  local cbin
  cbin=$(containerd_dir)
  [ -x "$SHIM_DIR/containerd-shim-spright-v1" ] ||
    die "no $SHIM_DIR/containerd-shim-spright-v1: cargo build --workspace --bins (or set SPRIGHT_SHIM_DIR)"
  for tool in runc iptables openssl ip; do command -v $tool >/dev/null || die "no $tool (scripts/install-deps.sh)"; done
  [ -x /usr/lib/cni/bridge ] || die "no CNI plugins in /usr/lib/cni (scripts/install-deps.sh)"
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  if ip link show "$BRIDGE" >/dev/null 2>&1; then die "bridge $BRIDGE exists: another cluster is up"; fi

  NODE=$(hostname | tr '[:upper:]' '[:lower:]')
  NODE_IP=$(node_ip)
  [ -n "$NODE_IP" ] || die "no IPv4 address with a route (kube-apiserver needs one to advertise)"
  mkdir -p "$DIR"/{run,log,cni,etcd,kubelet,pod-logs,containerd}
  chmod 700 "$DIR"
  echo "$NODE" >"$DIR/node"
  make_pki
  containerd_config >"$DIR/containerd.toml"
  cni_config >"$DIR/cni/10-$NETWORK.conflist"
  kubelet_config >"$DIR/kubelet.yaml"
  kube_proxy_config >"$DIR/kube-proxy.yaml"

  # The kubelet and the bridge plugin set these; `down` puts them back.
  for key in "${HOST_SYSCTLS[@]}"; do
    printf '%s=%s\n' "$key" "$(sysctl -n "$key" 2>/dev/null)" >>"$DIR/sysctl.saved"
  done
  [ -d /var/log/containers ] || touch "$DIR/made-var-log-containers"

  local t0
  t0=$(date +%s)
  start etcd "$K8S_BIN/etcd" --name spright --data-dir "$DIR/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_PORT" --advertise-client-urls "https://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "spright=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --cert-file "$DIR/pki/etcd.crt" --key-file "$DIR/pki/etcd.key" \
    --client-cert-auth --trusted-ca-file "$DIR/pki/ca.crt"
  # The shim first on containerd's PATH, then this containerd's runc shim.
  start containerd env PATH="$SHIM_DIR:$cbin:$PATH" "$cbin/containerd" --config "$DIR/containerd.toml"
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port "$API_PORT" \
    --etcd-servers "https://127.0.0.1:$ETCD_PORT" --etcd-cafile "$DIR/pki/ca.crt" \
    --etcd-certfile "$DIR/pki/apiserver.crt" --etcd-keyfile "$DIR/pki/apiserver.key" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --kubelet-client-certificate "$DIR/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$DIR/pki/apiserver-kubelet-client.key" \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --allow-privileged=true --profiling=false
  wait_for "etcd" etcd alive etcd
  wait_for "containerd" containerd test -S "$DIR/run/containerd.sock"
  wait_for "kube-apiserver" kube-apiserver kubectl get --raw /readyz
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$DIR/pki/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/pki/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/pki/controller-manager.kubeconfig" \
    --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
    --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
    --use-service-account-credentials --leader-elect=false --bind-address 127.0.0.1 \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$DIR/pki/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/pki/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/pki/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false
  start kubelet "$K8S_BIN/kubelet" --config "$DIR/kubelet.yaml" \
    --kubeconfig "$DIR/pki/kubelet.kubeconfig" --root-dir "$DIR/kubelet" \
    --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE" --node-ip "$NODE_IP"
  start kube-proxy "$K8S_BIN/kube-proxy" --config "$DIR/kube-proxy.yaml"
  wait_for "node $NODE to be Ready" kubelet \
    kubectl wait --for=condition=Ready "node/$NODE" --timeout=2s
  wait_for "the default service account" kube-controller-manager \
    kubectl get serviceaccount default
  import_images
  touch "$DIR/up"
  say "up in $(($(date +%s) - t0)) s: node $NODE ($NODE_IP), Kubernetes $KUBERNETES_VERSION, containerd $(basename "$(dirname "$cbin")")"
  print_env
}

import_images() {
  local cbin
  cbin=$(containerd_dir)
  for tar in "$repo"/target/images/*.tar; do
    [ -e "$tar" ] || { say "no images in target/images (e2e/images/build.sh --with-spright)"; return; }
    local said
    said=$("$cbin/ctr" --address "$DIR/run/containerd.sock" -n k8s.io images import "$tar" 2>&1) ||
      die "ctr images import $tar failed: $said"
  done
}

print_env() {
  echo "export KUBECONFIG=$DIR/pki/admin.kubeconfig"
  echo "export PATH=$K8S_BIN:\$PATH"
  echo "# ctr for this node: $(containerd_dir)/ctr --address $DIR/run/containerd.sock -n k8s.io"
}

stop_component() { # name
  local pid
  [ -f "$DIR/run/$1.pid" ] || return 0
  pid=$(cat "$DIR/run/$1.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/run/$1.pid"
}

down() {
  [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return; }
  local cbin ctr
  cbin=$(containerd_dir)
  ctr=("$cbin/ctr" --address "$DIR/run/containerd.sock" -n k8s.io)
  # Pods first, through Kubernetes, so the kubelet stops them and CNI and the shims clean up.
  if alive kube-apiserver && alive kubelet; then
    kubectl delete deployments,replicasets,statefulsets,daemonsets,jobs --all --all-namespaces \
      --wait=false >/dev/null 2>&1 || true
    kubectl delete pods --all --all-namespaces --grace-period=5 --timeout=60s >/dev/null 2>&1 ||
      say "pods did not all go in 60 s; stopping them through containerd"
  fi
  for c in kube-proxy kube-scheduler kube-controller-manager kubelet; do stop_component "$c"; done
  # Whatever is left, through containerd: the CRI plugin's own clean-up of sandboxes runs CNI DEL.
  local shims=()
  if alive containerd; then
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do
      echo "$id" >>"$DIR/run/containers"
      "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  # Shims of this containerd: their command line names its socket's address.
  mapfile -t shims < <(pgrep -f -- "-address $DIR/run/containerd.sock" || true)
  stop_component containerd
  for pid in "${shims[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  stop_component kube-apiserver
  stop_component etcd
  # runc state of our containers (shared root: only ids this containerd had).
  if [ -f "$DIR/run/containers" ]; then
    while read -r id; do
      [ -n "$id" ] || continue
      for root in /run/containerd/runc/k8s.io /run/containerd/spright/k8s.io; do
        if [ -e "$root/$id" ]; then
          runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
          rm -rf "${root:?}/$id"
        fi
      done
    done <"$DIR/run/containers"
  fi
  # kube-proxy's rules and chains, then CNI's for our network.
  if [ -x "$K8S_BIN/kube-proxy" ]; then "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  cleanup_kubelet_rules
  cleanup_cni_rules
  # Mounts under the state directory (kubelet volumes, rootfs, netns), innermost first.
  awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
  rm -rf "/var/lib/cni/networks/$NETWORK"
  rm -f /var/lib/cni/results/"$NETWORK"-* 2>/dev/null || true
  # The kubelet's cgroups (kubepods, in every hierarchy), empty now.
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$h/kubepods" ] || continue
    find "$h/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$DIR/sysctl.saved" ]; then
    while IFS='=' read -r key value; do
      [ -z "$value" ] || sysctl -q -w "$key=$value" >/dev/null 2>&1 || say "could not restore $key=$value"
    done <"$DIR/sysctl.saved"
  fi
  if [ -f "$DIR/made-var-log-containers" ]; then rmdir /var/log/containers 2>/dev/null || true; fi
  rm -rf "$DIR"
  say "down"
}

# The kubelet's own chains (kube-proxy --cleanup leaves them), in every table, IPv4 and IPv6.
cleanup_kubelet_rules() {
  local tool table rule chain
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    for table in filter nat mangle; do
      { "$tool" -w -t "$table" -S 2>/dev/null || true; } |
        { grep -E -- '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-(FIREWALL|KUBELET-CANARY|IPTABLES-HINT)( |$)' || true; } |
        while read -r rule; do eval "$tool -w -t $table ${rule/-A /-D }" 2>/dev/null || true; done
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$tool" -w -t "$table" -F "$chain" 2>/dev/null || true
        "$tool" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# The bridge plugin's masquerade chains (CNI-<hash>, commented with our network's name) and
# their jumps; what CNI DEL of a pod did not remove.
cleanup_cni_rules() {
  local rule chain
  # iptables -S prints the comment with its quotes escaped: match the network's name alone.
  { iptables -w -t nat -S POSTROUTING 2>/dev/null || true; } |
    { grep -E -- "-j CNI-[0-9a-f]+" || true; } | { grep -F -- "$NETWORK" || true; } | while read -r rule; do
    chain=$(sed -n 's/.* -j \(CNI-[0-9a-f]*\).*/\1/p' <<<"$rule")
    eval "iptables -w -t nat ${rule/-A /-D }" 2>/dev/null || true
    if [ -n "$chain" ]; then
      iptables -w -t nat -F "$chain" 2>/dev/null || true
      iptables -w -t nat -X "$chain" 2>/dev/null || true
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  images)
    [ -f "$DIR/up" ] || die "no cluster is up"
    import_images
    ;;
  *)
    echo "usage: $0 up|down|env|images" >&2
    exit 2
    ;;
esac
