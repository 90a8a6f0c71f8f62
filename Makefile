# Two commands do all the set-up: `make demo` (the main job) and `make test`.
# Each creates the local virtual environment .venv if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint format venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# The CPU wheel first: a plain "torch" requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sdegen demo

test: $(STAMP)
	$(BIN)/ruff check sdegen tests studies
	$(BIN)/ruff format --check sdegen tests studies
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check sdegen tests studies
	$(BIN)/ruff format --check sdegen tests studies

format: $(STAMP)
	$(BIN)/ruff format sdegen tests studies

clean:
	rm -rf $(VENV) .pytest_cache
