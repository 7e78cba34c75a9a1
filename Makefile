# noisesnn-jax: every target works on a fresh clone (each creates .venv when needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint clean bench install-peers reproduce reproduce-quick

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

## Speed benchmarks (ours, and peer libraries where installed): benchmarks/results/results.{json,md}
bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results

## Optional peers for `make bench`: CPU PyTorch from the pinned build, SpikingJelly, snnTorch, Spyx.
install-peers: install
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt '.[peers]'

## The method's claims on mnist5k (every method, training cost, noise ablation): experiments/results/
reproduce: install
	$(PY) experiments/reproduce.py --workdir runs/reproduce --out experiments/results

reproduce-quick: install
	$(PY) experiments/reproduce.py --quick --workdir runs/reproduce-quick --out runs/reproduce-quick

lint: install
	$(VENV)/bin/ruff check src tests experiments benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
