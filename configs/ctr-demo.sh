#!/usr/bin/env bash
# Runs the demo chain by hand with containerd: the pool-manager and gateway on the host, the
# three functions as containers under the spright runtime. As root, from the repository, after
# scripts/install-deps.sh. Uses the system's containerd (/run/containerd/containerd.sock) if one
# answers; otherwise starts containerd 2.3 as fetched by e2e/containerd/fetch.sh. The spright shim
# must be on containerd's PATH (this script installs it to /usr/local/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --workspace --bins
install -m 755 target/release/containerd-shim-spright-v1 /usr/local/bin/
./e2e/images/build.sh                                  # target/images/*.tar, no registry needed

if ! { command -v ctr >/dev/null && ctr version >/dev/null 2>&1; }; then
  ./e2e/containerd/fetch.sh 2.3
  v23=$(awk '$1 == "2.3" {print $3}' e2e/containerd/versions)
  PATH="${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}/containerd/$v23/bin:$PATH"
  containerd >/var/log/containerd.log 2>&1 &
  for _ in $(seq 1 300); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
fi
ctr images import target/images/functions.tar

target/release/spright up configs/demo-chain-containers.yaml &   # pool-manager + gateway
up=$!
trap 'for f in parse transform render; do ctr task kill -s SIGKILL $f; ctr task delete $f; ctr containers delete $f; done 2>/dev/null; kill -INT $up; wait $up' EXIT
until [ -f /run/spright/demo/manifest.json ]; do sleep 0.1; done

for f in parse transform render; do
  ctr run -d --runtime io.containerd.spright.v1 \
    --annotation spright.io/chain=demo --annotation spright.io/function=$f \
    spright.local/functions:latest $f /bin/spright-demo-$f
done

until target/release/spright status demo | awk '$1=="render" && $2==1 {ok=1} END {exit !ok}'; do sleep 0.1; done
curl -sS --data 'the cat saw the dog, and the dog saw the cat' http://127.0.0.1:8080/render
ctr task exec --exec-id look parse /bin/sh -c 'env | grep SPRIGHT; ls -l /run/spright'
target/release/spright status demo
