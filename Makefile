# noisesnn-jax: every target works on a fresh clone (each creates .venv when needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-fast faults lint docs clean bench noise-cost mutation accelerators scaling install-peers reproduce reproduce-quick reproduce-fashion-mnist \
	prepare prepare-imagenet train-cifar10 train-cifar100 train-imagenet

# TFDS datasets: where they live (read without TensorFlow). DIST_FLAGS: the multi-process flags
# given to both `noisesnn train` and `noisesnn evaluate` (DIST_FLAGS=--distributed on every worker
# of a TPU pod; "--coordinator H:P --num-processes N --process-id I" on GPU hosts). TRAIN_FLAGS,
# EVAL_FLAGS: more flags or --config overrides for one of them.
DATA_DIR ?= $(or $(TFDS_DATA_DIR),$(HOME)/tensorflow_datasets)
DIST_FLAGS ?=
TRAIN_FLAGS ?=
EVAL_FLAGS ?=
EVAL_T ?= 1,2,4,8,16,32
SOURCE_DIR ?=

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## Train the small CNN on mnist5k (Gaussian noise, no noise, ReLU ANN), evaluate T = 1..32.
demo: install
	$(PY) experiments/demo.py --workdir runs/demo --out experiments/results

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not faults" --durations=15 tests

## The tests without the multi-process and long end-to-end ones (marked slow)
test-fast: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow and not faults" tests

## Fault runs too long for `make test` (docs/faults.md): SIGKILL at 20 random moments of a run
faults: install
	$(PY) -m pytest -q -s -m faults tests

## Speed benchmarks (ours, and peer libraries where installed): benchmarks/results/results.{json,md}
bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results

## How cost grows with T and batch (ours at T=1 against BPTT; inference against T), measured side by
## side: benchmarks/results/scaling.{json,md,png}. About 3 min on 2 quiet cores.
scaling: install
	$(PY) benchmarks/scaling.py --out benchmarks/results

## Where the default noise's extra cost goes: the training step with and without noise, its random
## bits and its fusions, side by side (benchmarks/results/noise_cost.{json,md}; about 1 min)
noise-cost: install
	$(PY) benchmarks/noise_cost.py --out benchmarks/results

## Mutation testing (mutmut, forkserver): each group of core modules against its own tests in
## build/mutation/<group>; not part of `make test`. About 90 minutes on 2 busy cores (docs/development.md)
mutation: install
	$(PY) -m pip install --quiet 'mutmut>=3.8.1'
	$(PY) tools/mutation.py $(MUTATION_ARGS)

## Accelerator plan read from XLA's cost analysis (ResNet-34 at 224x224, compile only, about 8 min on
## 2 cores): benchmarks/results/accelerators.{json,md}
accelerators: install
	$(PY) benchmarks/accelerators.py --out benchmarks/results

## Optional peers for `make bench`: CPU PyTorch from the pinned build, SpikingJelly, snnTorch, Spyx.
install-peers: install
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt -e '.[peers]'

## The method's claims on mnist5k (every method, training cost, noise ablation): experiments/results/
reproduce: install
	$(PY) experiments/reproduce.py --workdir runs/reproduce --out experiments/results

## The claims table on full Fashion-MNIST (needs `make prepare DATASET=fashion_mnist` first; about
## 3 hours on 2 CPU cores; re-run to continue after a cut, finished runs are skipped): experiments/results/
JOBS ?= 2
reproduce-fashion-mnist: install
	$(PY) experiments/fashion_mnist.py --workdir runs/fashion_mnist --out experiments/results --jobs $(JOBS) \
	  --config.dataset.data_dir=$(DATA_DIR)

reproduce-quick: install
	$(PY) experiments/reproduce.py --quick --workdir runs/reproduce-quick --out runs/reproduce-quick

## Prepare a TFDS dataset:
##   make prepare DATASET=fashion_mnist [SOURCE_DIR=...] [DATA_DIR=...]   offline, from the four idx files
##     (SOURCE_DIR default: where Debian's dataset-fashion-mnist package puts them; mnist needs SOURCE_DIR)
##   make prepare DATASET=cifar10 [DATA_DIR=...]   downloads it; needs TensorFlow (the `prepare` extra)
prepare: install
	@test -n "$(DATASET)" || { echo "usage: make prepare DATASET=cifar10|cifar100|mnist|fashion_mnist [DATA_DIR=...] [SOURCE_DIR=...]"; exit 2; }
ifneq ($(filter $(DATASET),mnist fashion_mnist),)
	$(PY) -m noisesnn_jax prepare $(DATASET) --data-dir=$(DATA_DIR) --source-dir=$(SOURCE_DIR)
else
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[prepare]'
	$(VENV)/bin/tfds build $(DATASET) --data_dir=$(DATA_DIR) --file_format=array_record
endif

## ImageNet from the two ILSVRC2012 tars (TFDS cannot download them):
##   make prepare-imagenet MANUAL_DIR=<folder with ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar> [DATA_DIR=...]
prepare-imagenet: install
	@test -f "$(MANUAL_DIR)/ILSVRC2012_img_train.tar" -a -f "$(MANUAL_DIR)/ILSVRC2012_img_val.tar" || { \
	  echo "make prepare-imagenet: MANUAL_DIR='$(MANUAL_DIR)' must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"; exit 2; }
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[prepare]'
	$(VENV)/bin/tfds build imagenet2012 --manual_dir=$(MANUAL_DIR) --data_dir=$(DATA_DIR) --file_format=array_record

## Train at T=1 with noise on every device, then evaluate at T = 1..32: runs/<config>/
train-cifar10: install
	$(call train_eval,cifar10_vgg16)

train-cifar100: install
	$(call train_eval,cifar100_vgg16)

train-imagenet: install
	$(call train_eval,imagenet_resnet34)

define train_eval
	$(PY) -m noisesnn_jax train --config experiments/configs/$(1).py --workdir runs/$(1) \
	  --config.dataset.data_dir=$(DATA_DIR) $(DIST_FLAGS) $(TRAIN_FLAGS)
	$(PY) -m noisesnn_jax evaluate --workdir runs/$(1) --timesteps $(EVAL_T) --data-dir $(DATA_DIR) \
	  --json runs/$(1)/evaluation.json --plot runs/$(1)/accuracy_vs_t.png $(DIST_FLAGS) $(EVAL_FLAGS)
endef

## ruff, and the package's layers (docs/design.md): an upward import fails
lint: install
	$(VENV)/bin/ruff check src tests experiments benchmarks
	$(PY) -m pytest -q tests/test_layers_contract.py

## The documentation site: docs/_build/html/index.html (Sphinx, MyST pages, the API reference from
## the docstrings, the tutorial run at build time). Offline and strict: any warning, a broken link to
## a page or file, a broken cross-reference or an error in the tutorial fails it. Always a fresh build
## (-E), so that a second run reports the same warnings as the first.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: install $(DOCS_STAMP)
	rm -rf docs/_api
	$(VENV)/bin/sphinx-build -b html -E -W --keep-going -n -T -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf runs .pytest_cache .ruff_cache docs/_build docs/_api
