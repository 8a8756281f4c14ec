# One entry point for set-up, the demo, tests, benchmarks and lint.
# `make run` and `make test` work on a fresh machine: they create the venv, install
# torch==2.13.0 first (a CPU build; any other torch requirement pulls a multi-GB CUDA build),
# then the project. `make run` installs what running needs (the server extra, no services: the
# defaults are embedded); `make test` adds the dev extra and the system services the tests use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.huabu-installed
DEV_STAMP := $(VENV)/.huabu-dev-installed
OUT ?= outputs
PYTEST_ARGS ?=

.PHONY: setup setup-dev system run down test test-fast bench filters-eval quality lint format clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[server]"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[server,dev]"
	touch $(DEV_STAMP)

# redis-server backs the Redis state store and cache in tests.
system:
	@command -v redis-server >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }
	@# Debian's chromium runs the playground's browser tests (Playwright drives it; no browser download).
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

# What running needs.
setup: $(STAMP)

# What the tests, lint and the benchmarks need on top.
setup-dev: $(DEV_STAMP) system

# Start a local cluster on embedded defaults, generate images, write PNGs.
run: setup
	$(VENV)/bin/huabu demo --out $(OUT)

# Stop the local cluster that `make run` leaves running.
down:
	$(VENV)/bin/huabu down

test: setup-dev
	$(PY) -m pytest --durations=40 $(PYTEST_ARGS)

test-fast: setup-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup-dev
	$(PY) bench/run.py

# Precision, recall and the confusion of the prompt filter per category, adversarial kind and language,
# one report per split (dev: thresholds chosen there; holdout: template families never tuned on).
filters-eval: setup
	$(PY) -m huabu.filters.evaluate --per-split

# Prompt-adherence table of the bundled model (docs/MODEL.md).
quality: setup
	$(PY) -m huabu.deployments.backends.mmdit.eval.quality --model tiny-mmdit@v1
	$(PY) -m huabu.deployments.backends.mmdit.eval.quality --model tiny-mmdit@v2
	$(PY) -m huabu.deployments.backends.mmdit.eval.quality --model tiny-mmdit@v3

lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	@# mypy cannot follow the editable install's import hook: lay the huabu namespace out as a copy.
	rm -rf build/mypy && mkdir -p build/mypy/huabu
	for d in sdk deployments filters ab_testing cluster; do cp -r $$d build/mypy/huabu/$$d; done
	cd build/mypy && ../../$(PY) -m mypy --config-file ../../pyproject.toml \
		-p huabu.sdk -p huabu.deployments -p huabu.filters -p huabu.ab_testing -p huabu.cluster

format: setup-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) build outputs .pytest_cache .mypy_cache .ruff_cache
