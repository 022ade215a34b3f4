#!/usr/bin/env bash
# Fetches every containerd version of the e2e test matrix (e2e/containerd/versions), plus
# nerdctl, into a private cache outside the checkout (run as root):
#
#   $CACHE/containerd/<version>/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $CACHE/nerdctl/<version>/bin/nerdctl
#   CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}
#
# Usage: fetch.sh [SERIES...]     e.g. `fetch.sh` (everything), `fetch.sh 2.3 nerdctl`
#
# debian:<suite> lines: a private apt configuration (own sources list on the system's Debian
# mirror, own lists and cache under $CACHE/apt/<suite>; the system's sources, lists and dpkg
# status are not used), `apt-get download containerd=<version>`, `dpkg-deb -x`.
# go lines: `go install` of the tag, CGO_ENABLED=1 and the default build tags (the btrfs
# snapshotter only needs the kernel's uapi headers from linux-libc-dev); Go's module and build
# caches live in $CACHE/go. nerdctl is built without the checksum database (GONOSUMDB for its
# module alone); instead its module hash must equal the h1: pinned in the versions file.
#
# A version is built in a temp dir next to its place, checked to run here, stamped
# (<dir>/complete) and renamed into place in one step, so an interrupted run never leaves a
# version that looks complete; a version whose stamp exists is skipped, so a second run costs
# nothing. Prints one line per item; logs are in $CACHE/logs/.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
versions_file=$here/versions
CACHE=${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}

item=""    # the item being fetched, for messages
log=/dev/null
tmp=""     # its temp dir, removed on exit unless renamed into place

die() {
  echo "fetch: ${item:+$item: }$*" >&2
  exit 1
}
# Names the item and the failed step, shows the end of its log, exits non-zero.
fail() {
  echo "fetch: $item: FAILED: $*" >&2
  if [ -s "$log" ]; then
    echo "fetch: $item: last lines of $log:" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
  exit 1
}
# Runs a command with its output in the item's log.
run() {
  printf '+ %s\n' "$*" >>"$log"
  "$@" >>"$log" 2>&1 || fail "command failed: $*"
}
# Like run, with stdout into a file.
run_out() {
  local out=$1
  shift
  printf '+ %s > %s\n' "$*" "$out" >>"$log"
  if ! "$@" >"$out" 2>>"$log"; then
    cat "$out" >>"$log"
    fail "command failed: $*"
  fi
}
cleanup() {
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT

usage() {
  echo "usage: $0 [SERIES...]   (series from $versions_file; none = all)" >&2
  exit 2
}
case "${1:-}" in -h | --help) usage ;; esac

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get download, the cache under /var/cache)"
[ -r "$versions_file" ] || die "no versions file at $versions_file"

# ---- the versions file ----
all_series=() src_of=() ver_of=() extra_of=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  case "$line" in \#*) continue ;; esac
  read -r s src v x rest <<<"$line" || true
  [ -n "${s:-}" ] || continue
  where="$versions_file:$lineno"
  [ -n "${v:-}" ] && [ -z "${rest:-}" ] || die "$where: want <series> <source> <version> [extra]: $line"
  case "$src" in
    debian:?*) [ "$s" != nerdctl ] || die "$where: nerdctl comes from go" ;;
    go) ;;
    *) die "$where: unknown source '$src' (debian:<suite> or go)" ;;
  esac
  if [ "$s" = nerdctl ]; then
    [[ "${x:-}" == h1:* ]] || die "$where: nerdctl needs its module's h1: hash as 4th field"
  fi
  for prev in "${all_series[@]}"; do [ "$prev" != "$s" ] || die "$where: series $s twice"; done
  all_series+=("$s") src_of+=("$src") ver_of+=("$v") extra_of+=("${x:-}")
done <"$versions_file"

want=("$@")
for w in "${want[@]}"; do
  found=0
  for s in "${all_series[@]}"; do [ "$s" != "$w" ] || found=1; done
  [ "$found" -eq 1 ] || die "no series '$w' in $versions_file (have: ${all_series[*]})"
done
wanted() {
  [ "${#want[@]}" -eq 0 ] && return 0
  local w
  for w in "${want[@]}"; do [ "$w" != "$1" ] || return 0; done
  return 1
}

mkdir -p "$CACHE"/{containerd,nerdctl,logs,apt,go}
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  echo "fetch: waiting for another fetch.sh on $CACHE" >&2
  flock 9
fi
# Holding the lock, any temp dir is a leftover of an interrupted run.
rm -rf "$CACHE"/containerd/.tmp.* "$CACHE"/nerdctl/.tmp.*

# ---- Debian, through a private apt configuration ----
debian_mirror() {
  if [ -n "${SPRIGHT_DEBIAN_MIRROR:-}" ]; then echo "$SPRIGHT_DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk '/^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }
               /^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f" | grep -E '/debian/?$' | head -n 1 || true)
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  echo http://deb.debian.org/debian
}

declare -A apt_updated=()
apt_opts=()
# Sets apt_opts for a suite and updates its private lists (once per run).
apt_suite() {
  local suite=$1 d=$CACHE/apt/$1 keyring=""
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  if [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  fi
  echo "deb ${keyring}$(debian_mirror) $suite main" >"$d/sources.list"
  apt_opts=(
    -o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
    -o Dir::Cache::pkgcache=pkgcache.bin -o Dir::Cache::srcpkgcache=srcpkgcache.bin
    -o Dir::State::status=/dev/null
    -o Dir::Etc::preferences=/nonexistent -o Dir::Etc::preferencesparts=/nonexistent
    -o Acquire::Languages=none
  )
  if [ -z "${apt_updated[$suite]:-}" ]; then
    run apt-get "${apt_opts[@]}" -q update
    apt_updated[$suite]=1
  fi
}

fetch_debian() { # suite version
  local suite=$1 ver=$2 served deb b
  apt_suite "$suite"
  run_out "$tmp/madison" apt-cache "${apt_opts[@]}" madison containerd
  served=$(awk -F'|' '{ gsub(/[[:space:]]/, "", $2); print $2 }' "$tmp/madison")
  grep -qxF -- "$ver" <<<"$served" ||
    fail "containerd=$ver is not served by debian:$suite; it has: $(echo $served)"
  mkdir "$tmp/deb"
  # apt downloads as _apt where it can write, quietly; as root otherwise (with a warning).
  if id _apt >/dev/null 2>&1; then chown _apt "$tmp/deb"; fi
  (cd "$tmp/deb" && run apt-get "${apt_opts[@]}" -q download "containerd=$ver")
  deb=$(find "$tmp/deb" -name 'containerd_*.deb' | head -n 1)
  [ -n "$deb" ] || fail "apt-get download left no containerd_*.deb"
  run dpkg-deb -x "$deb" "$tmp/root"
  mkdir "$tmp/bin"
  for b in containerd ctr containerd-shim-runc-v2; do
    [ -f "$tmp/root/usr/bin/$b" ] || fail "the package has no /usr/bin/$b"
    install -m 0755 "$tmp/root/usr/bin/$b" "$tmp/bin/$b"
  done
  rm -rf "$tmp/deb" "$tmp/root" "$tmp/madison"
}

# ---- Go ----
go_bin=""
go_env() {
  if [ -z "$go_bin" ]; then
    go_bin=${GO:-$(command -v go || true)}
    [ -n "$go_bin" ] || [ ! -x /usr/local/go/bin/go ] || go_bin=/usr/local/go/bin/go
    [ -n "$go_bin" ] || fail "no Go toolchain (go on PATH, /usr/local/go/bin/go or \$GO)"
  fi
  export GOPATH=$CACHE/go GOMODCACHE=$CACHE/go/pkg/mod GOCACHE=$CACHE/go/build-cache
  export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on GOFLAGS=-modcacherw CGO_ENABLED=1
}
# Value of a string field of `go mod download -json` output (first occurrence).
json_field() {
  sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$2" | head -n 1
}
major_suffix() { # v2.3.7 -> /v2, v1.7.0 -> ""
  local major=${1#v}
  major=${major%%.*}
  if [ "$major" -ge 2 ] 2>/dev/null; then echo "/v$major"; fi
}

fetch_go_containerd() { # tag
  local tag=$1 mod rev dir ldflags
  mod=github.com/containerd/containerd$(major_suffix "$tag")
  go_env
  (cd "$tmp" && run_out "$tmp/mod.json" "$go_bin" mod download -json "$mod@$tag")
  rev=$(json_field Hash "$tmp/mod.json")
  dir=$(json_field Dir "$tmp/mod.json")
  # Version and revision as containerd's own Makefile stamps them (`containerd --version`).
  ldflags="-X $mod/version.Version=$tag -X $mod/version.Revision=$rev"
  if grep -Eq '^[[:space:]]*(exclude|replace)([[:space:]]|[(])' "$dir/go.mod"; then
    # `go install pkg@version` refuses a module whose go.mod has exclude or replace directives
    # (2.0 has excludes): build it as the main module, as its Makefile does, from the
    # verified module source (not its vendor/, which the module zip leaves out).
    mkdir "$tmp/bin"
    (cd "$dir" && run env GOFLAGS="-modcacherw -mod=readonly" "$go_bin" build -trimpath \
      -ldflags "$ldflags" -o "$tmp/bin/" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
  else
    (cd "$tmp" && run env GOBIN="$tmp/bin" "$go_bin" install -trimpath -ldflags "$ldflags" \
      "$mod/cmd/containerd@$tag" "$mod/cmd/ctr@$tag" "$mod/cmd/containerd-shim-runc-v2@$tag")
  fi
  rm -f "$tmp/mod.json"
}

fetch_go_nerdctl() { # tag h1-hash
  local tag=$1 want_sum=$2 mod sum gomod dir
  mod=github.com/containerd/nerdctl$(major_suffix "$tag")
  go_env
  # The checksum database does not know every nerdctl release; the pinned hash stands in for it.
  export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}github.com/containerd/nerdctl
  (cd "$tmp" && run_out "$tmp/mod.json" "$go_bin" mod download -json "$mod@$tag")
  sum=$(json_field Sum "$tmp/mod.json")
  gomod=$(json_field GoMod "$tmp/mod.json")
  dir=$(json_field Dir "$tmp/mod.json")
  [ "$sum" = "$want_sum" ] ||
    fail "module hash of $mod@$tag is '$sum', pinned '$want_sum': refusing to build"
  # The separately served .mod (what go resolves with) must be the go.mod of the verified zip.
  cmp -s "$gomod" "$dir/go.mod" || fail "$gomod differs from the go.mod in the verified module"
  # `go install ...@tag` cannot build nerdctl: it refuses a go.mod with replace directives, and
  # it reads the proxy's version list (for deprecations), which the proxy refuses (403). So it
  # is built as the main module from a copy of the verified source. The module's go.mod
  # replaces its test framework github.com/containerd/nerdctl/mod/tigron by ./mod/tigron, a
  # nested module that module zips leave out (and the proxy does not serve it): the binary does
  # not use it, but cmd/nerdctl/helpers/testing_linux.go (test helpers only) imports it
  # through pkg/testutil. The copy drops that file and the tigron requirement, nothing else.
  local tigron=github.com/containerd/nerdctl/mod/tigron src=$tmp/src f
  cp -a "$dir" "$src"
  chmod -R u+w "$src"
  if grep -q "^[^/]*$tigron .*=> \./" "$src/go.mod"; then
    for f in $(grep -rlE --include='*.go' "\"($mod/pkg/testutil|$tigron)[/\"]" "$src/cmd"); do
      case "$f" in
        *_test.go) ;;
        */cmd/nerdctl/helpers/testing_linux.go) printf '+ rm %s\n' "$f" >>"$log" && rm "$f" ;;
        *) fail "${f#"$src"/} (not a test helper) imports the test framework: cannot drop it" ;;
      esac
    done
    (cd "$src" && run "$go_bin" mod edit -dropreplace="$tigron" -droprequire="$tigron")
  fi
  mkdir "$tmp/bin"
  # Version and revision as nerdctl's Makefile stamps them.
  (cd "$src" && run env GOFLAGS="-modcacherw -mod=readonly" "$go_bin" build -trimpath \
    -ldflags "-X $mod/pkg/version.Version=$tag -X $mod/pkg/version.Revision=$(json_field Hash "$tmp/mod.json")" \
    -o "$tmp/bin/" ./cmd/nerdctl)
  rm -rf "$src"
  rm -f "$tmp/mod.json"
}

# Runs a fetched binary here (catches e.g. a libc newer than this system's) and records it.
check_runs() { # binary args...
  local out
  printf '+ %s\n' "$*" >>"$log"
  if ! out=$("$@" 2>&1); then
    echo "$out" >>"$log"
    fail "$(basename "$1") does not run here: $(head -n 1 <<<"$out")"
  fi
  echo "$out" >>"$log"
  printf '%s: %s\n' "$(basename "$1")" "$(tr -s '[:space:]' ' ' <<<"${out//$tmp/$dest}")" >>"$tmp/stamp"
}

# ---- the items ----
for i in "${!all_series[@]}"; do
  s=${all_series[$i]} src=${src_of[$i]} ver=${ver_of[$i]} extra=${extra_of[$i]}
  wanted "$s" || continue
  if [ "$s" = nerdctl ]; then
    item="nerdctl $ver" kind=nerdctl
  else
    item="containerd $s $ver" kind=containerd
  fi
  dest=$CACHE/$kind/$ver
  if [ -f "$dest/complete" ]; then
    echo "fetch: $item: cached"
    continue
  fi
  start=$SECONDS
  log=$CACHE/logs/$kind-$ver.log
  : >"$log"
  tmp=$(mktemp -d "$CACHE/$kind/.tmp.XXXXXX")
  chmod 0755 "$tmp"
  printf 'series=%s\nsource=%s\nversion=%s\n' "$s" "$src" "$ver" >"$tmp/stamp"
  [ -z "$extra" ] || printf 'sum=%s\n' "$extra" >>"$tmp/stamp"
  case "$kind:$src" in
    containerd:debian:*)
      fetch_debian "${src#debian:}" "$ver"
      how=downloaded
      ;;
    containerd:go)
      fetch_go_containerd "$ver"
      how=built
      ;;
    nerdctl:go)
      fetch_go_nerdctl "$ver" "$extra"
      how=built
      ;;
  esac
  if [ "$kind" = nerdctl ]; then
    [ -x "$tmp/bin/nerdctl" ] || fail "no bin/nerdctl after the build"
    check_runs "$tmp/bin/nerdctl" --version
  else
    for b in containerd ctr containerd-shim-runc-v2; do
      [ -x "$tmp/bin/$b" ] || fail "no bin/$b after the fetch"
    done
    check_runs "$tmp/bin/containerd" --version
    check_runs "$tmp/bin/ctr" --version
    check_runs "$tmp/bin/containerd-shim-runc-v2" -v
  fi
  secs=$((SECONDS - start))
  printf 'fetched=%s\nseconds=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$secs" >>"$tmp/stamp"
  # All binaries are in place: stamp, then one rename makes the version appear complete.
  mv "$tmp/stamp" "$tmp/complete"
  rm -rf "$dest"
  mv -T "$tmp" "$dest"
  tmp=""
  echo "fetch: $item: $how in $secs s"
done
