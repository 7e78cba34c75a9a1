"""The ``noisesnn`` command (:mod:`noisesnn_jax.run.cli`): train then evaluate, each bad input as one
line, a corrupt checkpoint through the real entry point, and result files written atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _helpers import TINY
from noisesnn_jax.run import cli
from noisesnn_jax.run.train import train_and_evaluate


def test_cli_train_and_evaluate(tmp_path, capsys):
    w = str(tmp_path / "run")
    assert cli.main(["train", "--workdir", w, "--no-progress"] + TINY) == 0
    out_json, out_png = str(tmp_path / "r.json"), str(tmp_path / "r.png")
    assert cli.main(["evaluate", "--workdir", w, "--timesteps", "1,2,8", "--json", out_json,
                     "--plot", out_png]) == 0
    r = json.load(open(out_json))
    for key in ("dataset", "model", "timesteps", "accuracy", "t1_accuracy", "t1_noisy_accuracy",
                "firing_rates"):
        assert key in r
    assert r["timesteps"] == [1, 2, 8] and len(r["accuracy"]) == 3
    assert r["accuracy"][0] == pytest.approx(r["t1_accuracy"])  # folded T=1 == unfolded T=1
    assert set(r["firing_rates"]["8"]) == {"act0"}
    assert os.path.getsize(out_png) > 1000
    assert "| 8 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["train", "--workdir", "{w}", "--config.dataset.name=cifar7"], "config.dataset.name='cifar7'"),
    (["train", "--workdir", "{w}", "--config.train.epoks=3"], "unknown config key"),
    (["train", "--workdir", "{w}", "--config.noise.std=-0.1"], "config.noise.std=-0.1"),
    (["train", "--workdir", "{w}", "--config", "nope.py"], "not found"),
    (["train", "--workdir", "{w}", "--config.dataset.name=npz", "--config.dataset.path={npz}"],
     "NaN or inf"),
    (["train", "--workdir", "{w}", "--config.dataset.name=npz", "--config.dataset.path={flat}"],
     "model.name=mlp"),
    (["evaluate", "--workdir", "{w}/missing"], "does not exist"),
    (["evaluate", "--workdir", "{empty}"], "no config.json"),
])
def test_cli_bad_input_one_line(tmp_path, capsys, argv, match):
    npz = tmp_path / "nan.npz"
    x = np.random.rand(10, 4, 4, 1)
    x[0, 0, 0, 0] = np.nan
    np.savez(npz, x_train=x, y_train=np.arange(10) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=np.random.rand(10, 3), y_train=np.arange(10) % 2,
             x_test=np.random.rand(4, 3), y_test=np.arange(4) % 2)
    (tmp_path / "empty").mkdir()
    argv = [a.format(w=tmp_path / "w", npz=npz, flat=flat, empty=tmp_path / "empty") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0]


def test_cli_corrupt_checkpoint_subprocess(tiny_config, tmp_path):
    """Through the real entry point: a corrupt checkpoint is one line on stderr, exit code 2."""
    w = str(tmp_path / "w")
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    for root, _, files in os.walk(os.path.join(w, "checkpoints")):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00corrupt")
    proc = subprocess.run([sys.executable, "-m", "noisesnn_jax", "evaluate", "--workdir", w],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "can be restored into this run" in last and "Traceback" not in proc.stderr


def test_a_failing_result_write_is_one_error_and_leaves_the_previous_file(tiny_config, tmp_path, capsys,
                                                                         monkeypatch):
    """Evaluation JSON and plots are written atomically: a write that fails (disk full, a bad path)
    ends in one line and exit code 1, and a previous result file stays as it was."""
    import errno

    w = str(tmp_path / "w")
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    out = tmp_path / "eval.json"
    out.write_text('{"previous": true}')

    def full_disk(obj, f, **kw):
        f.write('{"half": ')
        raise OSError(errno.ENOSPC, "No space left on device", str(out))
    monkeypatch.setattr(cli.json, "dump", full_disk)
    assert cli.main(["evaluate", "--workdir", w, "--timesteps", "1,2", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "free disk space" in errors[0]
    assert json.loads(out.read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["evaluate", "--workdir", w, "--timesteps", "1", "--plot", str(blocker / "p.png")]) == 1
    assert "fix the path" in capsys.readouterr().err
    assert cli.main(["evaluate", "--workdir", w, "--timesteps", "1,2", "--json", str(out),
                     "--plot", str(tmp_path / "p.png")]) == 0
    assert json.loads(out.read_text())["timesteps"] == [1, 2] and (tmp_path / "p.png").stat().st_size > 1000


def test_a_dead_peer_is_recognised_whatever_exception_reports_it():
    """A dead peer reaches the survivor as XLA's runtime error inside a compiled step, as a
    ``ValueError`` from ``process_allgather`` outside one, or chained under another exception: each
    is a lost peer in a multi-process run (and nothing is in a single-process one); other errors
    are not."""
    import argparse

    multi = argparse.Namespace(command="train", distributed=False, coordinator="127.0.0.1:1234")
    single = argparse.Namespace(command="train", distributed=False, coordinator=None)
    allgather = ValueError("UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read error [127.0.0.1]:45748: "
                           "Connection reset by peer")
    allreduce = RuntimeError("UNKNOWN: Gloo all-reduce failed: Read error: Connection reset by peer")
    try:
        try:
            raise allgather
        except ValueError as e:
            raise KeyError("while logging metrics") from e
    except KeyError as e:
        chained = e
    for error in (allgather, allreduce, chained):
        assert cli._peer_lost(error, multi), error
        assert not cli._peer_lost(error, single), error
    for error in (ValueError("operands could not be broadcast together"), RuntimeError("RESOURCE_EXHAUSTED: oom"),
                  KeyError("connection reset by peer")):
        assert not cli._peer_lost(error, multi), error
