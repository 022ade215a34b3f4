#!/usr/bin/env bash
# Installs everything, builds spright and runs the demo chain (parse -> transform -> render)
# answering real HTTP on 127.0.0.1:8080, until Ctrl-C. Run as root: the kernel data path
# loads eBPF. Without root, ROUTING=user runs the same chain on the user-space relay.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --workspace --bins --locked
routing="${ROUTING:-sockmap}"
target/release/spright up configs/demo-chain.yaml --routing "$routing" &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up' INT TERM

for _ in $(seq 1 200); do
  curl -sf -o /dev/null -X POST --data 'ready?' http://127.0.0.1:8080/render && break
  kill -0 "$up" 2>/dev/null || { wait "$up"; exit 1; }
  sleep 0.1
done

echo
echo '$ curl --data "the cat saw the dog, and the dog saw the cat" http://127.0.0.1:8080/render'
curl -sS --data 'the cat saw the dog, and the dog saw the cat' http://127.0.0.1:8080/render
echo
echo '$ curl --data "to be or not to be" http://127.0.0.1:8080/count     # RPC style: render calls parse and transform'
curl -sS --data 'to be or not to be' http://127.0.0.1:8080/count
echo
echo "The chain keeps serving on http://127.0.0.1:8080 (try /metrics, or 'target/release/spright status demo'). Ctrl-C stops it."
wait "$up"
