#!/usr/bin/env bash
# skaffold custom build of the `fraud-scorer` image, the BentoML way:
#   bentoml build -f bentos/fraud_scorer/bentofile.yaml .  ->  bentoml containerize <bento> -t "$IMAGE"
# The build context is the repository root: the Bento packs the shared package under src/.
#
# skaffold sets IMAGE (full reference to produce), PUSH_IMAGE (true for a remote cluster) and
# BUILD_CONTEXT. On kind and minikube PUSH_IMAGE is false: the image stays in the local Docker
# engine and skaffold loads it into the cluster. Runs by hand too:
#   IMAGE=fraud-scorer:dev scripts/build-scorer-image.sh
set -euo pipefail

: "${IMAGE:?set IMAGE to the image reference to build, e.g. fraud-scorer:dev}"
cd "${BUILD_CONTEXT:-$(dirname "$0")/..}"

BENTOML="${BENTOML:-.venv/bin/bentoml}"
if [ ! -x "$BENTOML" ]; then
  make venv >&2
fi
MODEL="${MODEL_TAG:-fraud-model:latest}"

# The bento packs the model from the local BentoML store: train one first if there is none.
if ! "$BENTOML" models get "$MODEL" >/dev/null 2>&1; then
  echo "no $MODEL in the BentoML store ($("$BENTOML" env 2>/dev/null | grep -m1 BENTOML_HOME || true)); training one with 'make model'" >&2
  make model >&2
fi

out="$("$BENTOML" build -f bentos/fraud_scorer/bentofile.yaml --output tag .)"
bento="$(printf '%s\n' "$out" | sed -n 's/^__tag__://p' | tail -n1)"
if [ -z "$bento" ]; then
  echo "bentoml build printed no tag:" >&2
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "built bento $bento; containerizing as $IMAGE" >&2
"$BENTOML" containerize "$bento" --image-tag "$IMAGE"

if [ "${PUSH_IMAGE:-false}" = "true" ]; then
  docker push "$IMAGE"
fi
