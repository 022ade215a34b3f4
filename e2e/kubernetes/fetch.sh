#!/usr/bin/env bash
# Builds the Kubernetes components of the test cluster from the Go module proxy into a private
# cache outside the checkout (run as root):
#
#   $CACHE/kubernetes/<version>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,
#                                    kubelet,kube-proxy,kubectl,etcd}
#   CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module
# (k8s.io/api, k8s.io/client-go, ...) with a directory of its own tree. So a private main
# module requires k8s.io/kubernetes at the pinned tag and replaces each staging module with its
# separately published release (v0.<minor>.<patch>, the same source); the replace list is read
# from k8s.io/kubernetes' own go.mod, so it follows the pin. etcd is the version that
# k8s.io/kubernetes itself requires (go.etcd.io/etcd/server/v3 is etcd's main package).
# The version stamp is what Kubernetes' own build sets (k8s.io/component-base/version).
#
# Built in a temp dir, checked to run, stamped (complete) and renamed into place in one step;
# a complete version is skipped, so a second run costs nothing. Log: $CACHE/logs/.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/kubernetes/versions
. "$here/versions"
CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
dest=$CACHE/kubernetes/$KUBERNETES_VERSION
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

die() {
  echo "fetch: kubernetes $KUBERNETES_VERSION: FAILED: $*" >&2
  if [ -s "${log:-}" ]; then
    echo "fetch: last lines of $log:" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root (the cache is under /var/cache)"
if [ -f "$dest/complete" ]; then
  echo "fetch: kubernetes $KUBERNETES_VERSION: cached in $dest"
  exit 0
fi

mkdir -p "$CACHE"/{kubernetes,logs,go}
exec 9>"$CACHE/.lock-kubernetes"
flock 9
[ -f "$dest/complete" ] && exit 0
rm -rf "$CACHE"/kubernetes/.tmp.*
tmp=$(mktemp -d "$CACHE/kubernetes/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=$CACHE/logs/kubernetes-$KUBERNETES_VERSION.log
: >"$log"
run() {
  printf '+ %s\n' "$*" >>"$log"
  "$@" >>"$log" 2>&1 || die "command failed: $*"
}

go_bin=${GO:-$(command -v go || true)}
[ -n "$go_bin" ] || [ ! -x /usr/local/go/bin/go ] || go_bin=/usr/local/go/bin/go
[ -n "$go_bin" ] || die "no Go toolchain (go on PATH, /usr/local/go/bin/go or \$GO)"
export GOPATH=$CACHE/go GOMODCACHE=$CACHE/go/pkg/mod GOCACHE=$CACHE/go/build-cache
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on GOFLAGS=-modcacherw CGO_ENABLED=0
begun=$(date +%s)

cd "$tmp"
staging=v0.${KUBERNETES_VERSION#v1.}
run "$go_bin" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION"
upstream=$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod
[ -r "$upstream" ] || die "no go.mod of k8s.io/kubernetes@$KUBERNETES_VERSION at $upstream"
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$upstream")
[ -n "$etcd" ] || die "k8s.io/kubernetes@$KUBERNETES_VERSION requires no go.etcd.io/etcd/server/v3"
{
  printf 'module spright.local/kubernetes-build\n\ngo %s\n\n' "$(awk '$1 == "go" { print $2 }' "$upstream")"
  printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
  sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\t\1 => \1 '"$staging"'|p' "$upstream"
  printf ')\n'
} >go.mod
grep -q '=> k8s.io/api ' go.mod || die "no staging replaces read from $upstream"
# Exact versions: a bare `go get` would move k8s.io/kubernetes to the newest release.
for c in "${components[@]}"; do run "$go_bin" get "k8s.io/kubernetes/cmd/$c@$KUBERNETES_VERSION"; done
run "$go_bin" get "go.etcd.io/etcd/server/v3@$etcd"
grep -q "k8s.io/kubernetes $KUBERNETES_VERSION\$" go.mod || die "go get moved k8s.io/kubernetes off $KUBERNETES_VERSION"

v=k8s.io/component-base/version
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w -X $v.gitVersion=$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
mkdir -p out/bin
run "$go_bin" build -trimpath -ldflags "$ldflags" -o out/bin/ "${components[@]/#/k8s.io/kubernetes/cmd/}"
run "$go_bin" build -trimpath -ldflags "-s -w" -o out/bin/etcd "go.etcd.io/etcd/server/v3"
for c in "${components[@]}"; do
  if [ "$c" = kubectl ]; then
    said=$(out/bin/kubectl version --client 2>>"$log") || die "kubectl does not run"
  else
    said=$(out/bin/"$c" --version 2>>"$log") || die "$c does not run"
  fi
  grep -q "$KUBERNETES_VERSION" <<<"$said" || die "$c does not say it is $KUBERNETES_VERSION: $said"
done
out/bin/etcd --version >>"$log" 2>&1 || die "etcd --version failed"
cp go.mod go.sum out/
date -u +%FT%TZ >out/complete
rm -rf "$dest"
mv out "$dest"
echo "fetch: kubernetes $KUBERNETES_VERSION (etcd $etcd): built in $(($(date +%s) - begun)) s"
