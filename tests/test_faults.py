"""Fault runs too long for ``make test``: ``make faults`` runs them (docs/faults.md)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.faults

ARGS = ["--no-progress", "--config.dataset.name=digits", "--config.model.name=mlp", "--config.model.hidden=32",
        "--config.train.epochs=4", "--config.train.batch_size=32", "--config.train.checkpoint_every_steps=1",
        "--config.eval.timesteps=1", "--config.train.log_every_steps=1"]


def _start(train_processes, workdir: str) -> tuple[subprocess.Popen, threading.Event, list[str]]:
    """Start ``noisesnn train``; the event is set once it logs its first training step (past
    start-up and compilation)."""
    proc = subprocess.Popen(train_processes.command() + ["train", "--workdir", workdir] + ARGS,
                            env=train_processes.env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started, lines = threading.Event(), []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step "):
                started.set()
        started.set()  # ended before training: do not wait for it

    threading.Thread(target=read, daemon=True).start()
    return proc, started, lines


def _variables(workdir: str):
    from noisesnn_jax.run.checkpoint import load_run
    _, _, variables = load_run(workdir, log=lambda m: None)[:3]
    return variables


def test_sigkill_at_twenty_random_moments_resumes_to_the_same_bits(tmp_path, train_processes):
    """SIGKILL at 20 random moments of a run that saves a checkpoint after every step (so most
    moments fall inside a save, or inside orbax's removal of old ones): every restart resumes, and
    the run ends with the variables of an uninterrupted run, bit for bit."""
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    proc, _, lines = _start(train_processes, ref)
    assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
    draw = random.Random(0)
    kills, resumed, partial, finished = 0, [], 0, False
    while kills < 20:
        proc, started, lines = _start(train_processes, run)
        assert started.wait(timeout=300)
        time.sleep(draw.uniform(0.0, 2.0))  # from the first step on: steps, saves, removals
        if proc.poll() is not None:  # it finished before this moment
            finished = True
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills += 1
        resumed += [int(m.split("resumed from step ")[1].split()[0]) for m in lines if "resumed from step " in m]
        partial += any("tmp" in d for d in os.listdir(os.path.join(run, "checkpoints"))) \
            if os.path.isdir(os.path.join(run, "checkpoints")) else 0
    assert kills == 20, f"the run finished after {kills} kills: make it longer"
    assert not finished
    proc, _, lines = _start(train_processes, run)
    assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
    assert resumed == sorted(resumed) and resumed, resumed  # each restart went on from a later checkpoint
    print(f"20 kills; restarts resumed from steps {resumed}; {partial} kills left a partial save behind")
    a, b = _variables(ref), _variables(run)
    import jax
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
