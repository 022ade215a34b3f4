#!/usr/bin/env bash
# Takes KEDA's ScaledObject CRD from KEDA's Go module (the Go module proxy serves the whole
# module tree, CRDs included) into a private cache outside the checkout (run as root):
#
#   $CACHE/keda/<version>/keda.sh_scaledobjects.yaml
#   CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
#
# The Kubernetes test applies it to its cluster and validates configs/kubernetes/autoscaling/
# against it (server-side dry run, strict field validation). A cached version is skipped.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/kubernetes/versions
. "$here/versions"
CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
dest=$CACHE/keda/$KEDA_VERSION
crd=keda.sh_scaledobjects.yaml
proxy=${GOPROXY_URL:-https://proxy.golang.org}

if [ -s "$dest/$crd" ]; then
  echo "fetch: keda $KEDA_VERSION: cached in $dest"
  exit 0
fi
mkdir -p "$CACHE/keda"
tmp=$(mktemp -d "$CACHE/keda/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
url=$proxy/github.com/kedacore/keda/v2/@v/$KEDA_VERSION.zip
curl -fsSL --retry 3 -o "$tmp/keda.zip" "$url" ||
  { echo "fetch: keda $KEDA_VERSION: FAILED: cannot download $url" >&2; exit 1; }
unzip -q -j "$tmp/keda.zip" "github.com/kedacore/keda/v2@$KEDA_VERSION/config/crd/bases/$crd" -d "$tmp" ||
  { echo "fetch: keda $KEDA_VERSION: FAILED: $crd is not in the module" >&2; exit 1; }
grep -q 'name: scaledobjects.keda.sh' "$tmp/$crd" ||
  { echo "fetch: keda $KEDA_VERSION: FAILED: $crd is not the ScaledObject CRD" >&2; exit 1; }
mkdir -p "$dest"
mv "$tmp/$crd" "$dest/$crd"
echo "fetch: keda $KEDA_VERSION: $dest/$crd"
