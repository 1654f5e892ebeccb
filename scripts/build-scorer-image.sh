#!/usr/bin/env bash
# skaffold custom build of the `fraud-scorer` image, the BentoML way:
#   bentoml build -f bentos/fraud_scorer/bentofile.yaml .  ->  bentoml containerize <bento> -t "$IMAGE"
# The build context is the repository root: the Bento packs the shared package under src/.
#
#   scripts/build-scorer-image.sh          build the image (skaffold's `buildCommand`)
#   scripts/build-scorer-image.sh --deps   print the build's inputs as a JSON array (skaffold's
#                                          `dependencies.command`): the sources, the lock and the
#                                          model's entry in the BentoML store
#
# The model is an input like the code: skaffold's inputDigest tag hashes what --deps lists, so a
# retrained model (a new version in the store) gives a new tag and a rebuild. The image carries
# the model in its labels: fraudstream.model_version=fraud-model:<version>,
# org.opencontainers.image.version=<version>, fraudstream.bento=fraud_scorer:<version>.
#
# skaffold sets IMAGE (full reference to produce), PUSH_IMAGE (true for a remote cluster) and
# BUILD_CONTEXT. On kind and minikube PUSH_IMAGE is false: the image stays in the local Docker
# engine and skaffold loads it into the cluster. Runs by hand too:
#   IMAGE=fraud-scorer:dev scripts/build-scorer-image.sh
# MODEL_TAG (default fraud-model:latest) and BENTOML_HOME (default ~/bentoml) choose the model.
set -euo pipefail

cd "${BUILD_CONTEXT:-$(dirname "$0")/..}"
MODEL="${MODEL_TAG:-fraud-model:latest}"

# The store folder of $MODEL (`latest` resolved the way BentoML does: the version named in the
# `latest` file), or nothing when the store lacks it. Plain files, no Python: skaffold runs
# --deps whenever it computes a tag.
model_dir() {
  local store name version
  store="${BENTOML_HOME:-$HOME/bentoml}/models"
  name="${MODEL%%:*}"
  name="${name,,}"
  version=latest
  if [[ "$MODEL" == *:* ]]; then version="${MODEL#*:}"; fi
  if [ "$version" = latest ]; then
    [ -f "$store/$name/latest" ] || return 0
    version="$(tr -d '[:space:]' <"$store/$name/latest")"
  fi
  if [ -f "$store/$name/$version/model.yaml" ]; then
    printf '%s\n' "$store/$name/$version"
  fi
}

if [ "${1:-}" = "--deps" ]; then
  {
    # what the Bento packs (bentofile.yaml: include/exclude) and how it is built
    find bentos/fraud_scorer src/fraudstream -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path 'src/fraudstream/local/*'
    printf '%s\n' pyproject.toml requirements.lock scripts/build-scorer-image.sh
    # the model: its metadata file names the version (a new training is a new version)
    dir="$(model_dir)"
    if [ -n "$dir" ]; then printf '%s\n' "$dir/model.yaml"; fi
  } | LC_ALL=C sort | sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/"&"/' | paste -sd, - | sed 's/.*/[&]/'
  exit 0
fi

: "${IMAGE:?set IMAGE to the image reference to build, e.g. fraud-scorer:dev}"
BENTOML="${BENTOML:-.venv/bin/bentoml}"
if [ ! -x "$BENTOML" ]; then
  make venv >&2
fi

# The bento packs the model from the local BentoML store: train one first if there is none.
if ! "$BENTOML" models get "$MODEL" >/dev/null 2>&1; then
  echo "no $MODEL in the BentoML store ($("$BENTOML" env 2>/dev/null | grep -m1 BENTOML_HOME || true)); training one with 'make model'" >&2
  make model >&2
fi
# One exact model for the Bento and the labels (a `latest` resolved once, not twice).
dir="$("$BENTOML" models get "$MODEL" --output path)"
version="$(basename "$dir")"
model_tag="$(basename "$(dirname "$dir")"):$version"

out="$(MODEL_TAG="$model_tag" "$BENTOML" build -f bentos/fraud_scorer/bentofile.yaml --output tag .)"
bento="$(printf '%s\n' "$out" | sed -n 's/^__tag__://p' | tail -n1)"
if [ -z "$bento" ]; then
  echo "bentoml build printed no tag:" >&2
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "built bento $bento with model $model_tag; containerizing as $IMAGE" >&2
# BentoML 1.4.36+ rejects the Bento's Dockerfile template (bentofile.yaml) unless the temporary
# build context it makes is under the working directory (bentoml/BentoML#5566): containerize
# from a scratch directory that holds that context.
case "$BENTOML" in */*) BENTOML="$(cd "$(dirname "$BENTOML")" && pwd)/$(basename "$BENTOML")" ;; esac
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(
  cd "$scratch"
  TMPDIR="$scratch" "$BENTOML" containerize "$bento" --image-tag "$IMAGE" \
    --opt "label=fraudstream.model_version=$model_tag" \
    --opt "label=org.opencontainers.image.version=$version" \
    --opt "label=fraudstream.bento=$bento"
)

if [ "${PUSH_IMAGE:-false}" = "true" ]; then
  docker push "$IMAGE"
fi
