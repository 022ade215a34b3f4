#!/usr/bin/env bash
# Builds the container images the containerd tests and the by-hand instructions use, without a
# registry: static binaries packed into OCI image archives for `ctr images import`.
#
#   target/images/functions.tar   spright.local/functions:latest   demo functions, the Online
#                                                                   Boutique, test function,
#                                                                   busybox
#   target/images/pause.tar       spright.local/pause:latest       the pod sandbox process
#
# With --with-spright, also (for Kubernetes, configs/kubernetes/):
#   target/images/spright.tar     spright.local/spright:latest     pool-manager, gateway, spright
set -euo pipefail
with_spright=false
[ "${1:-}" = "--with-spright" ] && with_spright=true
cd "$(dirname "$0")/../.."
out=target/images
static=target/static
triple=x86_64-unknown-linux-gnu

RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
  --target "$triple" --target-dir "$static" \
  -p spright-demo-chain -p spright-e2e -p spright-example-boutique \
  --bin spright-demo-parse --bin spright-demo-transform --bin spright-demo-render \
  --bin spright-boutique \
  --bin spright-testfn --bin spright-pause
bins="$static/$triple/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# functions: the demo chain's functions, the test function, and busybox for exec.
root="$work/functions"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/run"
cp "$bins"/spright-demo-{parse,transform,render} "$bins/spright-testfn" "$bins/spright-boutique" "$root/bin/"
strip "$root"/bin/spright-*
cp /bin/busybox "$root/bin/busybox"
for tool in sh echo cat ls env sleep true false id ps; do ln -s busybox "$root/bin/$tool"; done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
python3 e2e/images/mkimage.py "$root" "$out/functions.tar" spright.local/functions:latest

root="$work/pause"
mkdir -p "$root/bin"
cp "$bins/spright-pause" "$root/bin/pause"
strip "$root/bin/pause"
python3 e2e/images/mkimage.py "$root" "$out/pause.tar" spright.local/pause:latest --entrypoint /bin/pause

if $with_spright; then
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
    --target "$triple" --target-dir "$static" \
    -p spright-pool-manager -p spright-gateway -p spright-runner
  root="$work/spright"
  mkdir -p "$root/bin" "$root/tmp" "$root/run"
  cp "$bins"/spright-pool-manager "$bins"/spright-gateway "$bins"/spright "$root/bin/"
  strip "$root"/bin/*
  python3 e2e/images/mkimage.py "$root" "$out/spright.tar" spright.local/spright:latest
fi

echo "images: $(ls "$out"/*.tar | tr '\n' ' ')"
