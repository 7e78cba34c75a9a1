"""Fashion-MNIST prepared offline from its four idx files: tiny files written here go through
``prepare_idx`` into TFDS's own ``fashion_mnist`` layout and back through ``load_tfds``; damaged
and missing files are clear errors that leave nothing behind; the real files, where Debian's
package installed them, have the published counts."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from noisesnn_jax.data import tfds as tfds_data  # noqa: E402
from noisesnn_jax.errors import DataError  # noqa: E402

SIZES = {"train": 30, "test": 10}


def _write_idx(path: str, array: np.ndarray, magic: int, truncate: int = 0) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[:len(data) - truncate])


def _write_source(folder, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        img_file, lbl_file = tfds_data.IDX_FILES[split]
        _write_idx(os.path.join(folder, img_file), images, 2051)
        _write_idx(os.path.join(folder, lbl_file), labels, 2049)
        arrays[split] = (images, labels)
    return arrays


def test_prepare_from_idx_reads_like_a_tfds_build(tmp_path):
    src, data_dir = tmp_path / "src", str(tmp_path / "tfds")
    src.mkdir()
    arrays = _write_source(str(src))
    version_dir = tfds_data.prepare_idx("fashion_mnist", data_dir, str(src))
    import tensorflow_datasets as tfds
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    assert os.fspath(builder.data_dir) == version_dir
    assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
    assert builder.info.features["label"].names[0] == "T-shirt/top"  # the builder's own features
    ds = tfds_data.load_tfds("fashion_mnist", data_dir)
    assert (ds.num_train, ds.num_test, ds.input_shape, ds.num_classes) == (30, 10, (28, 28, 1), 10)
    # the test split comes back pixel-exact (standardized with the dataset's mean and std)
    x, y = ds.test_examples(np.arange(10))
    raw = np.rint((x[..., 0] * 0.3530 + 0.2860) * 255).astype(np.uint8)
    want = {bytes(img): int(label) for img, label in zip(*arrays["test"])}
    assert {bytes(r): int(label) for r, label in zip(raw, y)} == want
    # training batches: padded-crop-and-flip augmentation, the same for the same (seed, step)
    xb, yb = ds.train_batch(8, seed=1, step=2)
    np.testing.assert_array_equal(xb, ds.train_batch(8, seed=1, step=2)[0])
    np.testing.assert_array_equal(np.concatenate([ds.train_batch(8, 1, 2, slice(0, 4))[0],
                                                  ds.train_batch(8, 1, 2, slice(4, 8))[0]]), xb)
    # preparing again keeps what is there
    assert tfds_data.prepare_idx("fashion_mnist", data_dir, str(src)) == version_dir


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "wrong-kind", "labels-mismatch"])
def test_damaged_files_are_one_clear_error_and_write_nothing(tmp_path, damage):
    src, data_dir = tmp_path / "src", tmp_path / "tfds"
    src.mkdir()
    arrays = _write_source(str(src))
    img_file, lbl_file = tfds_data.IDX_FILES["test"]
    if damage == "truncated":
        _write_idx(str(src / img_file), arrays["test"][0], 2051, truncate=100)
    elif damage == "not-gzip":
        (src / img_file).write_bytes(b"this is not a gzip file")
    elif damage == "wrong-kind":
        _write_idx(str(src / img_file), arrays["test"][1], 2049)  # labels where images belong
    else:
        _write_idx(str(src / lbl_file), np.arange(7) % 10, 2049)
    with pytest.raises(DataError) as e:
        tfds_data.prepare_idx("fashion_mnist", str(data_dir), str(src))
    assert ("t10k" in str(e.value) or "'test'" in str(e.value)) and "\n" not in str(e.value)
    assert not data_dir.exists() or not any(data_dir.rglob("dataset_info.json"))


def test_missing_files_name_the_fix_and_exit_2(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        tfds_data.prepare_idx("fashion_mnist", str(tmp_path / "tfds"), str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "noisesnn_jax", "prepare", "fashion_mnist", "--source-dir",
                           str(tmp_path), "--data-dir", str(tmp_path / "tfds")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "train-images-idx3-ubyte.gz" in lines[0] and "SOURCE_DIR" in lines[0]
    assert not (tmp_path / "tfds").exists()


DEBIAN = tfds_data.DEBIAN_SOURCE["fashion_mnist"]


@pytest.mark.skipif(not os.path.isdir(DEBIAN), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_files_have_the_published_counts():
    arrays = tfds_data.read_idx_dataset("fashion_mnist")
    for split, n in (("train", 60_000), ("test", 10_000)):
        x, y = arrays[split]
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))


def test_validation_split_holds_out_the_last_training_images_and_never_reads_test(tmp_path):
    """``validation=n``: training batches come from the first N-n training images, evaluation from the
    last n (unaugmented); ``augment`` picks mirror-only or no augmentation; bad values are clear errors."""
    src, data_dir = tmp_path / "src", str(tmp_path / "tfds")
    src.mkdir()
    arrays = _write_source(str(src))
    tfds_data.prepare_idx("fashion_mnist", data_dir, str(src))
    ds = tfds_data.load_tfds("fashion_mnist", data_dir, validation=8, augment="none")
    assert (ds.num_train, ds.num_test) == (22, 8)
    unstd = lambda x: np.rint((x[..., 0] * 0.3530 + 0.2860) * 255).astype(np.uint8)  # noqa: E731
    train_rows = {bytes(img) for img in arrays["train"][0]}
    x, y = ds.test_examples(np.arange(8))
    # the last 8 training records (TFDS's fixed record order), unaugmented, with their labels
    records, record_labels = ds._pixels(ds._train, np.arange(22, 30))
    np.testing.assert_array_equal(unstd(x), records[..., 0].astype(np.uint8))
    np.testing.assert_array_equal(y, record_labels)
    held = {bytes(r) for r in unstd(x)}
    assert held <= train_rows and len(held) == 8
    for step in range(6):  # no training batch touches a held-out image; no augmentation
        xb, _ = ds.train_batch(11, seed=0, step=step)
        rows = {bytes(r) for r in unstd(xb)}
        assert rows <= train_rows and not rows & held
    with pytest.raises(IndexError):
        ds.test_examples(np.array([8]))
    flip = tfds_data.load_tfds("fashion_mnist", data_dir, augment="flip")
    xb, _ = flip.train_batch(16, seed=3, step=0)
    plain = tfds_data.load_tfds("fashion_mnist", data_dir, augment="none").train_batch(16, seed=3, step=0)[0]
    _, flips = tfds_data.crop_flip_draws(16, 3, 0)
    assert 0 < flips.sum() < 16  # mirrored where drawn, unshifted everywhere
    np.testing.assert_array_equal(xb, np.where(flips[:, None, None, None], plain[:, :, ::-1], plain))
    for bad in (dict(validation=30), dict(validation=-1), dict(augment="imagenet"), dict(augment="rotate")):
        with pytest.raises(DataError, match="validation|augment"):
            tfds_data.load_tfds("fashion_mnist", data_dir, **bad)
