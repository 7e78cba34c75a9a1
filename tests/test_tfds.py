"""TFDS datasets without TensorFlow: a tiny dataset in ImageNet's TFDS layout, written here, goes
through the real pipeline (``tfds`` data source, decoding, augmentation), one ResNet-18 training
step and a T=4 evaluation."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from noisesnn_jax.data import prepare  # noqa: E402
from noisesnn_jax.data import tfds as tfds_data  # noqa: E402
from noisesnn_jax.errors import DataError  # noqa: E402

N_TRAIN, N_VAL = 24, 10


def _jpeg(seed: int, h: int, w: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    # a smooth image with a class-dependent colour, so JPEG keeps it close to the array
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    img = np.clip(base * 0.5 + rng.integers(0, 120, size=3), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """Tiny JPEGs of varied sizes, 10 classes, in ImageNet's TFDS layout (ArrayRecord)."""
    d = str(tmp_path_factory.mktemp("tfds"))
    prepare.write_imagenet_layout(
        d, [(_jpeg(i, 36 + 3 * i, 48 + (i % 5) * 4), i % 10) for i in range(N_TRAIN)],
        [(_jpeg(1000 + i, 36 + 3 * i, 48 + (i % 5) * 4), i % 10) for i in range(N_VAL)])
    assert os.path.exists(os.path.join(d, "imagenet2012", str(tfds.builder_cls("imagenet2012").VERSION),
                                       "dataset_info.json"))
    return d


def test_preparation_names_stay_importable_from_tfds():
    """Preparation moved to ``data.prepare``; the names importers used from ``data.tfds`` are the same objects."""
    for name in ("prepare_idx", "write_layout", "write_imagenet_layout", "read_idx", "read_idx_dataset",
                 "prepare_command", "resolve_data_dir", "IDX_FILES", "IDX_COUNTS", "IDX_DATASETS", "DEBIAN_SOURCE"):
        assert getattr(tfds_data, name) is getattr(prepare, name), name


def test_pipeline_reads_imagenet_layout_deterministically(imagenet_dir):
    ds = tfds_data.load_tfds("imagenet2012", data_dir=imagenet_dir, image_size=32, workers=3)
    assert (ds.num_train, ds.num_test, ds.num_classes, ds.input_shape) == (N_TRAIN, N_VAL, 1000, (32, 32, 3))
    x, y = ds.train_batch(8, seed=3, step=5)
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.all(np.isfinite(x)) and abs(float(x.mean())) < 3
    x2, y2 = ds.train_batch(8, seed=3, step=5)
    np.testing.assert_array_equal(x, x2)  # same (seed, step): same images, same augmentation
    np.testing.assert_array_equal(y, y2)
    # each process loads only its rows; together they are the global batch, augmented identically
    parts = [ds.train_batch(8, seed=3, step=5, rows=slice(i * 2, (i + 1) * 2)) for i in range(4)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    assert not np.array_equal(ds.train_batch(8, seed=3, step=6)[0], x)
    # evaluation: resize + center crop, deterministic, labels as written
    xe, ye = ds.test_examples(np.arange(N_VAL))
    assert xe.shape == (N_VAL, 32, 32, 3)
    np.testing.assert_array_equal(np.sort(ye), np.sort(np.arange(N_VAL) % 10))  # TFDS shuffles by key
    np.testing.assert_array_equal(ds.test_examples(np.arange(N_VAL))[0], xe)


def test_pipeline_decodes_itself_and_matches_tfds_decoding_bit_for_bit(imagenet_dir):
    """ImageNet examples stay encoded until the transform decodes them (PIL) and crops the decoded
    image directly; the batches equal, bit for bit, TFDS's own decoding followed by the array
    transforms and the arithmetic standardization."""
    from noisesnn_jax.data.batching import batch_indices

    ds = tfds_data.load_tfds("imagenet2012", data_dir=imagenet_dir, image_size=32, workers=2)
    assert ds.encoded
    builder = tfds.builder("imagenet2012", data_dir=imagenet_dir)
    train, val = builder.as_data_source(split="train"), builder.as_data_source(split="validation")
    x, y = ds.train_batch(8, seed=3, step=5)
    want = []
    for j, i in enumerate(batch_indices(ds.num_train, 8, 3, 5)):
        rng = np.random.default_rng([3, 5, j])
        img = tfds_data.random_resized_crop(np.asarray(train[int(i)]["image"]), rng, 32)
        img = img[:, ::-1] if rng.random() < 0.5 else img
        want.append((img.astype(np.float32) / 255.0 - ds.mean) / ds.std)
    np.testing.assert_array_equal(x, np.stack(want))
    xe, _ = ds.test_examples(np.arange(N_VAL))
    want = [(tfds_data.center_crop(np.asarray(val[i]["image"]), 32).astype(np.float32) / 255.0 - ds.mean) / ds.std
            for i in range(N_VAL)]
    np.testing.assert_array_equal(xe, np.stack(want))


def test_standardize_by_table_is_the_arithmetic_bit_for_bit():
    mean, std = np.asarray((0.485, 0.456, 0.406), np.float32), np.asarray((0.229, 0.224, 0.225), np.float32)
    table = tfds_data.standardize_table(mean, std)
    img = np.random.default_rng(0).integers(0, 256, size=(17, 13, 3), dtype=np.uint8)
    img[0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
    want = (img.astype(np.float32) / 255.0 - mean) / std
    np.testing.assert_array_equal(tfds_data.standardize_uint8(img, table), want)
    np.testing.assert_array_equal(tfds_data.standardize_uint8(img[:, ::-1], table), want[:, ::-1])


def test_decode_image_converts_other_modes():
    """A grey or CMYK JPEG in an RGB dataset decodes to RGB; garbage is a clear error."""
    from PIL import Image

    for mode, color in (("L", 90), ("CMYK", (10, 20, 30, 0))):
        buf = io.BytesIO()
        Image.new(mode, (9, 7), color).save(buf, format="JPEG")
        pil = tfds_data.decode_image(buf.getvalue(), 3)
        assert pil.mode == "RGB" and np.asarray(pil).shape == (7, 9, 3)
    spec = tfds_data.SPECS["imagenet2012"]
    ds = tfds_data.TFDSDataset("imagenet2012", spec, [], [], encoded=True)
    with pytest.raises(DataError, match="example 3 is not a readable image.*prepare the dataset again"):
        ds._decoded(b"not an image", 3)


def test_augmentations():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
    crop = tfds_data.random_resized_crop(img, np.random.default_rng(1), 16)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, tfds_data.random_resized_crop(img, np.random.default_rng(1), 16))
    center = tfds_data.center_crop(img, 20)
    assert center.shape == (20, 20, 3)
    # a uniform image stays uniform through crops and resizes
    flat = np.full((50, 30, 1), 77, np.uint8)
    assert np.all(tfds_data.center_crop(flat, 8) == 77)
    assert np.all(tfds_data.random_resized_crop(flat, rng, 8) == 77)
    small = rng.integers(1, 255, size=(32, 32, 3), dtype=np.uint8)
    offsets, flips = tfds_data.crop_flip_draws(20, seed=0, step=0)
    outs = tfds_data.pad_crop_flip(np.repeat(small[None], 20, 0), offsets, flips)
    assert outs.shape == (20, 32, 32, 3)
    # the same draws for the same (seed, step), others for another step
    np.testing.assert_array_equal(tfds_data.crop_flip_draws(20, 0, 0)[0], offsets)
    assert not np.array_equal(tfds_data.crop_flip_draws(20, 0, 1)[0], offsets)
    # every output is the drawn window of the zero-padded image, flipped or not; both occur
    padded = np.pad(small, ((4, 4), (4, 4), (0, 0)))
    kinds = []
    for o, (dy, dx), flip in zip(outs, offsets, flips):  # exactly the drawn window
        w = padded[dy:dy + 32, dx:dx + 32]
        np.testing.assert_array_equal(o, w[:, ::-1] if flip else w)
        kinds.append(bool(flip))
    assert 0 < sum(kinds) < len(kinds)


def test_missing_dataset_names_where_it_looked_and_the_fix(tmp_path, monkeypatch):
    empty = str(tmp_path / "nothing")
    with pytest.raises(DataError) as e:
        tfds_data.load_tfds("cifar10", data_dir=empty)
    msg = str(e.value)
    assert "not prepared" in msg and os.path.join(empty, "cifar10") in msg
    assert "TFDS_DATA_DIR" in msg and "--config.dataset.data_dir" in msg
    assert f"make prepare DATASET=cifar10 DATA_DIR={empty}" in msg
    monkeypatch.setenv("TFDS_DATA_DIR", empty)
    with pytest.raises(DataError, match="make prepare-imagenet MANUAL_DIR="):
        tfds_data.load_tfds("imagenet2012")
    # the command reports it in one line and exits 2
    env = dict(os.environ, TFDS_DATA_DIR=empty, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "noisesnn_jax", "train", "--workdir", str(tmp_path / "w"),
                           "--config.dataset.name=cifar10", "--config.model.name=vgg11"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: dataset 'cifar10' is not prepared" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # multi-process or long end-to-end: make test runs it, make test-fast skips it
def test_resnet18_trains_and_evaluates_at_t4_on_imagenet_layout(imagenet_dir, tmp_path):
    """One ResNet-18 (ImageNet stem) training step at 32x32 on the real pipeline, a checkpoint,
    then the evaluation command at T=1 and T=4 over the validation split."""
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.train import train_and_evaluate
    from noisesnn_jax.run.workdir import evaluate_run

    c = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "configs",
                                            "imagenet_resnet34.py"))
    config_lib.apply_overrides(c, ["--config.model.name=resnet18", f"--config.dataset.data_dir={imagenet_dir}",
                                   "--config.dataset.image_size=32", "--config.train.batch_size=8",
                                   "--config.eval.batch_size=5"])
    work = str(tmp_path / "run")
    train_and_evaluate(c, work, progress=False, log=lambda *a: None, stop_at_step=1)
    r = evaluate_run(work, timesteps=(4,), log=lambda *a: None, data_dir=imagenet_dir)
    assert r["dataset"] == "imagenet2012" and r["model"] == "resnet18" and r["num_test"] == N_VAL
    assert r["timesteps"] == [4] and 0.0 <= r["accuracy"][0] <= 1.0
    rates = r["firing_rates"]["4"]
    assert rates and all(0.0 <= v <= 1.0 for v in rates.values())
    assert any(v > 0 for v in rates.values())  # the spiking network is not silent


def test_damaged_dataset_files_are_one_clear_error(imagenet_dir, tmp_path):
    import glob
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(imagenet_dir, copy)
    (train_file,) = glob.glob(os.path.join(copy, "imagenet2012", "*", "imagenet2012-train.array_record*"))
    with open(train_file, "r+b") as f:  # keep the size, damage the records
        f.seek(0)
        f.write(os.urandom(min(os.path.getsize(train_file), 4096)))
    with pytest.raises(DataError, match="prepare"):
        ds = tfds_data.load_tfds("imagenet2012", data_dir=copy, image_size=32, workers=2)
        ds.train_batch(8, seed=0, step=0)


@pytest.mark.slow  # multi-process or long end-to-end: make test runs it, make test-fast skips it
def test_two_processes_each_read_their_rows_and_match_one_process(imagenet_dir, tmp_path, train_processes):
    """Two processes on 127.0.0.1 (one device each) each load only their half of every global batch
    from the TFDS dataset and train to the same parameters as one process with two devices."""
    import json

    args = ["--no-progress", "--config.dataset.name=imagenet2012", f"--config.dataset.data_dir={imagenet_dir}",
            "--config.dataset.image_size=16", "--config.model.name=cnn", "--config.model.channels=8,16",
            "--config.model.pool_after=0", "--config.train.epochs=1", "--config.train.batch_size=8",
            "--config.eval.batch_size=4"]
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    outs = train_processes.run_two(two, args)
    assert "data parallel over 2 devices (2 processes)" in outs[0] and "epoch" in outs[0]
    train_processes.run_one(one, args)
    train_processes.assert_same_params(two, one, ("conv0", "conv1", "readout"))
    # the per-epoch test accuracy (sharded evaluation over both processes) is the same too
    metrics = []
    for w in (two, one):
        with open(os.path.join(w, "metrics.jsonl")) as f:
            metrics.append(json.loads(f.read().splitlines()[-1]))
    assert metrics[0]["test_accuracy_t1"] == metrics[1]["test_accuracy_t1"]


def test_an_exception_in_a_data_worker_names_the_example_and_nothing_hangs(imagenet_dir, monkeypatch):
    """A transform that fails for one example inside the loader's thread pool: the main thread gets
    one DataError naming that example's index (the cause chained), after every worker has stopped;
    the loader keeps working for the next batch."""
    import concurrent.futures

    ds = tfds_data.load_tfds("imagenet2012", data_dir=imagenet_dir, image_size=16, workers=3)
    bad = int(tfds_data.batch_indices(ds.num_train, 8, 0, 0)[5])
    plain = type(ds).imagenet_train_transform

    def failing(self, img, rng, out=None):  # the row is the last word of the crop's seed
        if rng.bit_generator.seed_seq.entropy[2] == 5:
            raise ValueError("planted")
        return plain(self, img, rng, out)

    monkeypatch.setattr(type(ds), "imagenet_train_transform", failing)
    with concurrent.futures.ThreadPoolExecutor(1) as guard:  # a hang fails the test instead of stalling it
        future = guard.submit(ds.train_batch, 8, 0, 0)
        with pytest.raises(DataError, match=rf"example {bad} \(row 5 of the batch\) failed in a data worker: "
                                            r"ValueError: planted") as info:
            future.result(timeout=120)
    assert isinstance(info.value.__cause__, ValueError)
    monkeypatch.setattr(type(ds), "imagenet_train_transform", plain)
    x, _ = ds.train_batch(8, 0, 1)
    assert x.shape[0] == 8 and np.isfinite(x).all()


def test_a_truncated_shard_is_one_error_naming_the_file_and_the_prepare_command(imagenet_dir, tmp_path):
    import glob
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(imagenet_dir, copy)
    (train_file,) = glob.glob(os.path.join(copy, "imagenet2012", "*", "imagenet2012-train.array_record*"))
    with open(train_file, "r+b") as f:
        f.truncate(os.path.getsize(train_file) // 2)
    with pytest.raises(DataError) as info:
        ds = tfds_data.load_tfds("imagenet2012", data_dir=copy, image_size=32, workers=2)
        for step in range(4):  # every batch, so the lost half is read
            ds.train_batch(8, seed=0, step=step)
    assert train_file in str(info.value) and "make prepare-imagenet" in str(info.value)
