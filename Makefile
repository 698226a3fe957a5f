# Two entry points, each creating its own virtual environment in .venv:
#   make demo   set up, then run the main job on the embedded default
#   make test   set up (with the dev extras), then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is not pinned by the package (bring your CPU or CUDA build); on a machine without torch we
# install this CPU build first so that nothing pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory chromium
	touch $@ $(VENV)/.core

# the browser test of `transeg serve`'s page drives Debian's chromium: installed when missing and we are
# root with apt (CI); otherwise that one test skips
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: no chromium and not root with apt-get: the page's browser test will skip"; fi

demo: $(VENV)/.core
	$(BIN)/transeg demo --out demo-output

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-output
