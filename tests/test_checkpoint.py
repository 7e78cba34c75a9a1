"""Checkpoints (:mod:`noisesnn_jax.run.checkpoint`): a corrupt newest checkpoint falls back to the
previous one, and resuming refuses another model or dataset but not data that moved."""

from __future__ import annotations

import os

import pytest

from noisesnn_jax.errors import CheckpointError
from noisesnn_jax.run.checkpoint import load_run
from noisesnn_jax.run.train import train_and_evaluate


def test_corrupt_newest_checkpoint_falls_back(tiny_config, tmp_path):
    w = str(tmp_path / "w")
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    steps = sorted(int(d) for d in os.listdir(os.path.join(w, "checkpoints")) if d.isdigit())
    assert len(steps) == 2
    newest = os.path.join(w, "checkpoints", str(steps[-1]))
    for root, _, files in os.walk(newest):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    messages = []
    load_run(w, log=messages.append)
    assert any(f"step {steps[-1]}" in m and "unreadable" in m for m in messages)
    # every checkpoint corrupt: one clear error
    for root, _, files in os.walk(os.path.join(w, "checkpoints", str(steps[0]))):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint .* can be restored"):
        load_run(w, log=lambda m: None)


def test_refuses_to_resume_a_different_model(tiny_config, tmp_path):
    w = str(tmp_path / "w")
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    tiny_config.model.hidden = (16,)
    with pytest.raises(CheckpointError, match=r"model.hidden: saved \[32\], now \[16\]"):
        train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)


def test_resume_ignores_where_the_data_lives_but_not_what_it_is(tiny_config):
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.checkpoint import check_compatible

    saved = config_lib.from_json(config_lib.to_json(tiny_config))
    tiny_config.dataset.data_dir, tiny_config.dataset.workers = "/mnt/elsewhere", 8
    check_compatible(saved, tiny_config, "w")  # a preempted job restarted with the data mounted elsewhere
    tiny_config.dataset.image_size = 64
    with pytest.raises(CheckpointError, match="dataset.image_size: saved 0, now 64"):
        check_compatible(saved, tiny_config, "w")
    # image_size 0 is the dataset's own size: the same run as writing it out
    tiny_config.dataset.name, tiny_config.dataset.image_size = "cifar10", 0
    saved = config_lib.from_json(config_lib.to_json(tiny_config))
    tiny_config.dataset.image_size = 32
    check_compatible(saved, tiny_config, "w")
