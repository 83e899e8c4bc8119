# Quick start:  make sweep   (venv + install + the embedded 5-split study)
#               make test    (venv + install + the test suite)
# TORCH_SPEC pins the torch build installed before everything else (setup.py keeps a range), e.g.
#   make test TORCH_SPEC="torch==2.13.0"                       (CPU build, the default here)
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"   (Turing and newer; cu126 on a V100)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install sweep test lint services clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

sweep: install
	$(PY) launchers/sweep.py --splits 5

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check benchmark launchers analysis tests benchmarks

clean:
	rm -rf runs mlruns .pytest_cache
