# The two commands of the README. Each sets up what it needs: a virtual environment in .venv with
# PyTorch (CPU build pinned first, so pip does not pull a multi-GB CUDA build) and spikebench.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
OUT    ?= studies/main

.PHONY: run test setup setup-dev data browser lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

# Test-only packages (attack reference, event-file readers, the peer SNN libraries compared in tests and
# `spikebench perf`) that declare torchvision (which must not be installed next to this torch) or
# heavy optional dependencies: installed without their dependencies; tests that need them skip otherwise.
NODEPS ?= torchattacks tonic importRosbag expelliarmus snntorch norse spikingjelly nir nirtorch loguru neurobench

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# Fashion-MNIST: already on disk, else Debian's package (when root with apt), else the official files.
data: setup
	@$(BIN)/spikebench data --no-download >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || true; \
	  fi; }
	@$(BIN)/spikebench data

# The main job: every study behind the paper's four claims, in quick mode, then the report. The last
# line printed is the path of the HTML report. Rerunning continues (and reuses) what is there.
run: data
	$(BIN)/spikebench study all --quick --out $(OUT)

# Headless Chromium for the report's browser test: already on PATH, else Debian's package (when root with
# apt); elsewhere the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	    echo "chromium could not be installed: the browser test will skip"; \
	  else echo "chromium is not installed (needs root and apt): the browser test will skip"; fi; }

test: setup-dev browser
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) runs
