# fraudstream developer commands. `make up` runs the pipeline; `make test` sets up and tests everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fraudstream
STAMP := $(VENV)/.installed

.PHONY: up test venv lint format clean model serve tools browser ui e2e-kind

up: venv  ## run the whole pipeline locally (Ctrl-C stops it)
	$(VENV)/bin/fraudstream up

test: venv lint tools browser  ## set everything up and run every test
	$(VENV)/bin/pytest -p no:cacheprovider tests

# Pinned helm for the chart tests: a helm v3 on PATH, or one built once with `go install` and
# cached in $(CACHE)/bin (see scripts/tools.sh).
tools:
	@scripts/tools.sh >/dev/null

# Debian's Chromium for the UI's real-browser test (Playwright drives it; it never downloads one).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "chromium missing: install it (apt-get install chromium) or the UI browser test is skipped"; fi; }

# The analyst page against the pipeline `make up` runs (its default addresses).
ui: venv  ## the Streamlit analyst page on http://127.0.0.1:8501
	KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} \
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	$(VENV)/bin/streamlit run ui/app.py --server.port 8501 --server.headless true \
	  --browser.gatherUsageStats false

# The virtualenv is built from the committed lock file; flock keeps parallel runs from racing.
venv: $(STAMP)
$(STAMP): requirements.lock pyproject.toml
	@mkdir -p $(CACHE)
	flock $(CACHE)/.venv-$(shell pwd | md5sum | cut -c1-8).lock bash -c '\
	  set -e; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  [ -x $(UV) ] || $(PY) -m pip install -q uv==0.13.8; \
	  $(UV) pip sync -q --python $(PY) requirements.lock; \
	  $(UV) pip install -q --python $(PY) --no-deps -e .; \
	  touch $(STAMP)'

# The scorer alone on port $PORT (default 3000); the model named by MODEL_TAG (default fraud-model:latest) is
# trained first if the BentoML store lacks it. Ctrl-C / SIGTERM stop it cleanly.
serve: venv  ## run the fraud scorer (BentoML) alone on port 3000 (PORT overrides)
	@$(VENV)/bin/bentoml models get "$${MODEL_TAG:-fraud-model:latest}" >/dev/null 2>&1 || $(MAKE) model
	exec $(VENV)/bin/bentoml serve bentos.fraud_scorer.service:FraudScorer --port "$${PORT:-3000}"

# The default model: simulated 2019 transactions of 500 card holders (fixed seed), trained with
# history features into the BentoML store ($BENTOML_HOME, default ~/bentoml) as fraud-model.
# Same data, seed and thread count every time, so the same model.
MODEL_DATA := .run/model/transactions-2019.csv
model: venv  ## train the default fraud model on generated data into the BentoML store
	@mkdir -p $(dir $(MODEL_DATA))
	$(VENV)/bin/fraudstream generate --customers 500 --start 2019-01-01 --end 2019-12-31 --seed 42 -o $(MODEL_DATA)
	$(VENV)/bin/fraudstream train --data $(MODEL_DATA) --threads 2 --seed 0

lint: venv  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove local state (the download cache in ~/.cache/fraudstream is kept)
	rm -rf $(VENV) .run .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The users' journeys on a real kind cluster (not part of `make test`: ~40 min). Needs Docker, kind,
# kubectl and helm; uses skaffold when installed. See scripts/e2e_kind/ and k8s/README.md.
e2e-kind: venv  ## deploy to kind, load-test in the cluster, check monitoring, alerts and chaos
	scripts/e2e-kind.sh $(E2E_ARGS)
