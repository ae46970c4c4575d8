# The two commands a fresh machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Keep pip's cache (default location) so compiled wheels are built once per machine.
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test test-fast build install install-test clean

run: install
	$(BIN)/rag build
	$(BIN)/rag search "How can a network be made equivariant to transformations of its input?"

test: install-test
	$(BIN)/python -m pytest

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

build: install
	$(BIN)/rag build

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
