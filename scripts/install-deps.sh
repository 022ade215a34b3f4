#!/usr/bin/env bash
# Installs everything spright needs on a fresh Debian 12 machine (run as root).
# Idempotent: packages already present are left alone.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt and bpffs need it)" >&2
  exit 1
fi

packages=(
  clang llvm libbpf-dev linux-libc-dev   # SPROXY is C, built with clang -target bpf
  bpftool                                 # inspecting loaded programs and maps
  pkg-config build-essential curl ca-certificates
  runc                                    # the shim runs containers with runc (every containerd of the
                                          # test matrix is fetched privately by e2e/containerd/fetch.sh;
                                          # no system containerd is installed, used or touched)
  protobuf-compiler                       # k8s-cri (CRI client for e2e tests) needs protoc
  wrk                                     # load generator for benchmarks
  python3-matplotlib                      # plots of e2e/bench/workloads.py
  linux-perf                              # profiles of e2e/bench/workloads.py --profile
  nginx                                   # the Knative-style baseline's queue-proxy stand-in
  busybox-static                          # a shell for the test images (ctr exec, plain containers)
  containernetworking-plugins             # pod networking for the CRI tests and nerdctl (bridge, portmap, ...)
  iptables                                # nerdctl's port mapping (CNI portmap/firewall)
  openssl                                 # the test cluster's certificates (e2e/kubernetes/cluster.sh)
  unzip                                   # KEDA's CRD out of its Go module (e2e/kubernetes/fetch-keda.sh)
  iproute2 procps psmisc python3
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts nginx on port 80 when it installs it; the baselines run their own nginx
# processes, so stop and disable the packaged service (with or without systemd).
if [[ " ${missing[*]} " == *" nginx "* ]]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  else
    if [ -x /etc/init.d/nginx ]; then /etc/init.d/nginx stop >/dev/null 2>&1 || true; fi
    if command -v update-rc.d >/dev/null 2>&1; then update-rc.d nginx disable >/dev/null 2>&1 || true; fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    [ -x "$c" ] && export PATH="$(dirname "$c"):$PATH" && break
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: no Rust toolchain found; install Rust 1.95 or newer with rustup first" >&2
  exit 1
fi

# bpffs: SPROXY's maps are pinned there.
if ! mountpoint -q /sys/fs/bpf; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi
echo "install-deps: done"
