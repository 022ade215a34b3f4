#!/usr/bin/env bash
# Installs everything and runs spright's whole test suite: formatting, lints, unit tests and the
# end-to-end tests against the real kernel (SPROXY needs root; run this as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component" || { echo "test: cargo ${component} is missing" >&2; exit 1; }
  fi
done

step "format"
cargo fmt --all -- --check
step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build"
cargo build --workspace --bins --locked
step "containerd versions"
# Every containerd of the test matrix and nerdctl, into a cache outside the checkout (a warm
# cache costs nothing; a cold one builds 2.0, 2.2, 2.3 and nerdctl with Go: about 13 minutes).
./e2e/containerd/fetch.sh
step "kubernetes"
# The test cluster's components, built from the Go module proxy into the same cache (warm:
# nothing; cold: about 8 minutes on 2 cores).
./e2e/kubernetes/fetch.sh
# KEDA's ScaledObject CRD, which the cluster validates configs/kubernetes/autoscaling/ against.
./e2e/kubernetes/fetch-keda.sh
step "images"
# Static binaries in OCI archives for the containerd and Kubernetes tests (no registry needed).
./e2e/images/build.sh --with-spright
step "test"
# Root-only tests fail instead of skipping when CI=true.
cargo test --workspace --locked -- --test-threads="${SPRIGHT_TEST_THREADS:-2}"
