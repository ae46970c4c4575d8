# The two commands a fresh machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Keep pip's cache (default location) so compiled wheels are built once per machine.
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test test-fast build bench-answering install install-test clean

QUESTION ?= How much do Equivariant Transformers improve the error rate of ResNet classifiers?

run: install
	$(BIN)/rag build
	$(BIN)/rag ask "$(QUESTION)"

test: install-test
	$(BIN)/python -m pytest

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

build: install
	$(BIN)/rag build

# Answer speed and citation quality of the product against the naive pipeline (~10 min).
bench-answering: install
	$(BIN)/rag build
	$(BIN)/python -m bench.answering

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

clean:
	rm -rf $(VENV) .rag .pytest_cache *.egg-info
