# The README's two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

# torch is pinned first: the CPU wheel kept on this machine (an unpinned torch pulls a CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,eval,test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/diffusers-lit demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) HF_HUB_DISABLE_TELEMETRY=1 $(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

clean:
	rm -rf $(VENV) outputs
