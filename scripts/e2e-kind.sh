#!/usr/bin/env bash
# `make e2e-kind`: deploy to a kind cluster and prove every user journey there (see
# scripts/e2e_kind/__main__.py). Needs Docker, kind, kubectl and helm; uses skaffold when it is
# installed. Options: --keep (keep a cluster this run created), --no-skaffold, --skip-deploy,
# --only deploy,smoke,http,kafka,alert,chaos,monitoring, --rate, --duration. Report: .run/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make venv >&2
PYTHONPATH=scripts exec .venv/bin/python -m e2e_kind "$@"
