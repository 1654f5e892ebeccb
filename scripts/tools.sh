#!/usr/bin/env bash
# Install the pinned command-line tools the chart tests need, once, into the download cache.
#
#   scripts/tools.sh          build what is missing, then print the tool directory
#
# helm: a `helm` v3 already on PATH is used as it is; otherwise helm ${HELM_VERSION} is built from
# source with `go install` (a few minutes on 2 cores, the first time only) into
# ${XDG_CACHE_HOME:-~/.cache}/fraudstream/bin/helm-${HELM_VERSION} and linked as `helm` there.
# The Kubernetes JSON schemas come from the `kubernetes-validate` package in requirements.lock.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/fraudstream"
BIN="$CACHE/bin"
mkdir -p "$BIN"

install_helm() {
  local target="$BIN/helm-$HELM_VERSION"
  if [ -x "$target" ]; then
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "error: helm is not on PATH and Go is missing to build helm $HELM_VERSION" >&2
    return 1
  fi
  echo "building helm $HELM_VERSION with $(go version | cut -d' ' -f3) (first run only) ..." >&2
  local tmp
  tmp="$(mktemp -d "$BIN/.helm-build.XXXXXX")"
  # GOFLAGS is cleared so a -mod=vendor or similar setting of the caller cannot break the build.
  GOBIN="$tmp" GOFLAGS="" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$tmp/helm" "$target"
  rmdir "$tmp"
}

# Parallel `make test` runs share the cache: one builds, the others wait for it.
exec 9>"$BIN/.tools.lock"
flock 9

# A helm v3 on PATH is linked, unless it is this cache's own link (the cache's bin/ on PATH):
# linking that to itself would leave a loop instead of a helm.
on_path="$(command -v helm 2>/dev/null || true)"
if [ -n "$on_path" ] && [ "$on_path" != "$BIN/helm" ] \
    && helm version --short 2>/dev/null | grep -q '^v3\.'; then
  ln -sfn "$on_path" "$BIN/helm"
elif [ -n "$on_path" ] && [ "$on_path" = "$BIN/helm" ] && "$BIN/helm" version >/dev/null 2>&1; then
  :  # already in place
else
  install_helm
  ln -sfn "helm-$HELM_VERSION" "$BIN/helm"
fi
"$BIN/helm" version --short >&2
echo "$BIN"
