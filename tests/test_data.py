"""Datasets behind one interface (:mod:`noisesnn_jax.data`): the embedded ones, the npz loader's
checks, the fake dataset for throughput runs and the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from noisesnn_jax.data import load_dataset
from noisesnn_jax.errors import DataError
from noisesnn_jax.run import config as config_lib


def test_digits_split_fixed_and_standardized():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape == (1352, 8, 8, 1) and a.x_test.shape == (445, 8, 8, 1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.num_classes == 10
    assert abs(a.x_train.mean()) < 1e-4 and abs(a.x_train.std() - 1) < 1e-3
    # stratified: each class in test has a quarter (rounded down) of its examples
    assert np.all(np.bincount(a.y_test) == (np.bincount(a.y_test) + np.bincount(a.y_train)) // 4)


def test_mnist5k_is_real_mnist():
    d = load_dataset("mnist5k")
    assert d.x_train.shape == (4000, 28, 28, 1) and d.x_test.shape == (1000, 28, 28, 1)
    assert np.all(np.bincount(d.y_test) == 100) and np.all(np.bincount(d.y_train) == 400)
    raw = d.x_train * d.std + d.mean
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert 0.1 < raw.mean() < 0.15  # MNIST's mean intensity is about 0.13


def _write(tmp_path, **arrays):
    good = dict(x_train=np.random.rand(20, 6, 6, 1).astype(np.float32), y_train=np.arange(20) % 3,
                x_test=np.random.rand(8, 6, 6, 1).astype(np.float32), y_test=np.arange(8) % 3)
    good.update(arrays)
    good = {k: v for k, v in good.items() if v is not None}
    path = tmp_path / "d.npz"
    np.savez(path, **good)
    return str(path)


def test_npz_ok_and_grayscale_gets_channel(tmp_path):
    d = load_dataset("npz", _write(tmp_path, x_train=np.random.rand(20, 6, 6),
                                   x_test=np.random.rand(8, 6, 6)))
    assert d.input_shape == (6, 6, 1) and d.num_classes == 3
    flat = load_dataset("npz", _write(tmp_path, x_train=np.random.rand(20, 5), x_test=np.random.rand(8, 5)))
    assert flat.input_shape == (5,) and not flat.is_image


@pytest.mark.parametrize("arrays,match", [
    (dict(x_train=np.full((20, 6, 6, 1), np.nan)), "NaN or inf"),
    (dict(x_test=np.full((8, 6, 6, 1), np.inf)), "NaN or inf"),
    (dict(y_test=None), "lacks"),
    (dict(y_train=np.arange(19) % 3), "one per example"),
    (dict(x_test=np.random.rand(8, 5, 5, 1)), "differ in shape"),
    (dict(x_train=np.random.rand(20, 2, 2, 2, 2)), "channels-last"),
    (dict(y_train=np.arange(20) - 5), "negative"),
    (dict(y_train=np.linspace(0, 1, 20)), "integer"),
    (dict(x_train=np.array(["a"] * 20)), "numbers"),
])
def test_npz_bad_input(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        load_dataset("npz", _write(tmp_path, **arrays))


def test_npz_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz", str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot be read"):
        load_dataset("npz", str(bad))
    with pytest.raises(DataError, match="not known"):
        load_dataset("imagenet9")


def test_fake_dataset_for_throughput_runs():
    d = load_dataset("fake", fake_shape=(16, 16, 3), fake_classes=5, fake_size=50)
    assert (d.num_train, d.num_test, d.input_shape, d.num_classes, d.is_image) == (45, 5, (16, 16, 3), 5, True)
    x, y = d.train_batch(8, 0, 3)
    assert x.shape == (8, 16, 16, 3) and y.shape == (8,) and y.max() < 5
    assert (x.dtype, y.dtype) == (np.float32, np.int32)  # the labels every dataset gives: int32 classes
    x2, y2 = d.train_batch(8, 0, 3, rows=slice(4, 8))
    np.testing.assert_array_equal(x2, x[4:])
    np.testing.assert_array_equal(y2, y[4:])
    xt, yt = d.test_examples(np.arange(5))
    assert xt.shape == (5, 16, 16, 3) and list(yt) == [(45 + i) % 5 for i in range(5)] and yt.dtype == np.int32
    # big images cost a fixed pool, not one array per example
    big = load_dataset("fake", fake_shape=(224, 224, 3), fake_classes=1000, fake_size=1_000_000)
    assert big.num_train == 900_000 and big.train_batch(4, 0, 0)[0].shape == (4, 224, 224, 3)


def test_fake_dataset_trains_through_the_loop(tmp_path):
    from noisesnn_jax.run.train import train_and_evaluate

    c = config_lib.get_config()
    config_lib.apply_overrides(c, ["--config.dataset.name=fake", "--config.dataset.image_size=8",
                                   "--config.dataset.fake_classes=3", "--config.dataset.fake_size=70",
                                   "--config.model.channels=4", "--config.model.pool_after=0",
                                   "--config.train.epochs=1", "--config.train.batch_size=16"])
    last = train_and_evaluate(c, str(tmp_path / "w"), progress=False, log=lambda *a: None)
    assert last["steps"] == 3 and 0.0 <= last["test_accuracy_t1"] <= 1.0


def test_validation_split_of_an_in_memory_dataset_and_its_config_checks():
    from noisesnn_jax.data import dataset_from_config, load_dataset
    from noisesnn_jax.errors import ConfigError, DataError
    from noisesnn_jax.run import config as config_lib

    full = load_dataset("digits")
    c = config_lib.get_config()
    config_lib.apply_overrides(c, ["--config.dataset.name=digits", "--config.dataset.validation=100"])
    ds = dataset_from_config(config_lib.validate(c))
    assert (ds.num_train, ds.num_test) == (full.num_train - 100, 100)
    np.testing.assert_array_equal(ds.test_examples(np.arange(100))[0], full.x_train[-100:])
    np.testing.assert_array_equal(ds.x_train, full.x_train[:-100])
    for override, field in (("--config.dataset.validation=-1", "validation"),
                            ("--config.dataset.augment=rotate", "augment"),
                            ("--config.dataset.augment=flip", "augment")):  # digits is not a TFDS dataset
        c = config_lib.get_config()
        config_lib.apply_overrides(c, ["--config.dataset.name=digits", override])
        with pytest.raises(ConfigError, match=field):
            config_lib.validate(c)
    c = config_lib.get_config()
    config_lib.apply_overrides(c, ["--config.dataset.name=digits", f"--config.dataset.validation={full.num_train}"])
    with pytest.raises(DataError, match="validation"):
        dataset_from_config(config_lib.validate(c))
