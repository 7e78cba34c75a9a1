# noisesnn-jax: every target works on a fresh clone (each creates .venv when needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## Train the small CNN on mnist5k (Gaussian noise, no noise, ReLU ANN), evaluate T = 1..32.
demo: install
	$(PY) experiments/demo.py --workdir runs/demo --out experiments/results

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

lint: install
	$(VENV)/bin/ruff check src tests experiments

clean:
	rm -rf runs .pytest_cache .ruff_cache
