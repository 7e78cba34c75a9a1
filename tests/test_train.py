"""Training (:mod:`noisesnn_jax.run.train`): exact resume and reruns, SIGTERM mid-training, the logs,
TensorBoard event files, a fine-tune from another run, a diverging run and the workdir lock."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from _helpers import TINY
from noisesnn_jax.run import cli
from noisesnn_jax.run.checkpoint import load_run
from noisesnn_jax.run.train import train_and_evaluate


def _params(workdir):
    _, _, variables, _ = load_run(workdir, log=lambda m: None)
    return variables


def test_train_learns_and_resume_is_exact(tiny_config, tmp_path):
    """A run stopped mid-epoch and resumed ends with the same parameters, bit for bit, as an
    uninterrupted one, and so does a second run of the same config and seed."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    last = train_and_evaluate(tiny_config, a, progress=False, log=lambda m: None)
    assert last["epoch"] == 2 and last["test_accuracy_t1"] > 0.6  # 10 classes: chance is 0.1
    lines = [json.loads(s) for s in open(os.path.join(a, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2]

    train_and_evaluate(tiny_config, b, progress=False, log=lambda m: None, stop_at_step=50)
    assert _params_step(b) == 50
    train_and_evaluate(tiny_config, b, progress=False, log=lambda m: None)
    va, vb = _params(a), _params(b)
    for x, y in zip(jax.tree_util.tree_leaves(va), jax.tree_util.tree_leaves(vb)):  # bit for bit
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the same config and seed, run again from scratch: the same bits (docs/faults.md)
    c = str(tmp_path / "c")
    train_and_evaluate(tiny_config, c, progress=False, log=lambda m: None)
    for x, y in zip(jax.tree_util.tree_leaves(va), jax.tree_util.tree_leaves(_params(c))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _params_step(workdir):
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    return steps[-1]


@pytest.mark.slow  # multi-process or long end-to-end: make test runs it, make test-fast skips it
def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path, train_processes):
    """SIGTERM mid-training: a checkpoint is saved, exit code 143; re-running ends with the same
    parameters as a run that was never interrupted."""
    import signal

    args = ["train", "--no-progress"] + TINY + ["--config.train.epochs=3", "--config.train.batch_size=32"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(args + ["--workdir", a]) == 0
    marker = str(tmp_path / "inside-epoch-2")
    # From step 60 (inside epoch 2 of 3, 42 steps each) every step takes 0.5 s, so the signal
    # lands mid-training however fast the machine is.
    proc = subprocess.Popen(train_processes.command(60, marker) + args + ["--workdir", b],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train_processes.wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "saved a checkpoint" in out + err
    assert 60 <= _params_step(b) < 84  # stopped inside epoch 2
    assert cli.main(args + ["--workdir", b]) == 0
    for x, y in zip(jax.tree_util.tree_leaves(_params(a)), jax.tree_util.tree_leaves(_params(b))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_logs_for_pods_and_a_changed_schedule_is_stated(tiny_config, tmp_path):
    """A start-up summary, log_every_steps lines (steps/s, loss, ETA) through the plain log, and a
    resume with more epochs says that the learning-rate schedule changed."""
    w = str(tmp_path / "w")
    tiny_config.train.log_every_steps = 20
    lines: list[str] = []
    train_and_evaluate(tiny_config, w, progress=False, log=lines.append)
    assert "mlp (spike" in lines[0] and "digits (1,352 train / 445 test" in lines[0] and "global batch 32" in lines[0]
    steps = [m for m in lines if m.startswith("step ")]
    assert len(steps) == (2 * 1352 // 32) // 20 and all("steps/s" in m and "ETA" in m and "loss" in m for m in steps)
    metrics = [json.loads(s) for s in open(os.path.join(w, "metrics.jsonl"))]
    assert all(r["steps"] == 1352 // 32 for r in metrics)  # every step counted, not a sample
    tiny_config.train.epochs = 3
    lines.clear()
    train_and_evaluate(tiny_config, w, progress=False, log=lines.append)
    assert any("train.epochs 2 -> 3" in m and "schedule is rebuilt" in m for m in lines)


def test_tensorboard_event_files(tiny_config, tmp_path):
    """--config.train.tensorboard=True writes TensorBoard event files (tensorboardX, no TensorFlow)."""
    import glob
    import struct

    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    w = str(tmp_path / "w")
    tiny_config.train.tensorboard = True
    tiny_config.train.log_every_steps = 20
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    (path,) = glob.glob(os.path.join(w, "tensorboard", "events.out.tfevents.*"))
    tags = {}
    with open(path, "rb") as f:  # TFRecord framing: length, its CRC, the record, its CRC
        while header := f.read(12):
            (n,) = struct.unpack("<Q", header[:8])
            event = event_pb2.Event.FromString(f.read(n))
            f.read(4)
            for v in event.summary.value:
                tags.setdefault(v.tag, []).append((event.step, v.simple_value))
    epochs = [json.loads(s) for s in open(os.path.join(w, "metrics.jsonl"))]
    assert [s for s, _ in tags["epoch/test_accuracy_t1"]] == [e["step"] for e in epochs]
    assert tags["epoch/test_accuracy_t1"][-1][1] == pytest.approx(epochs[-1]["test_accuracy_t1"])
    assert len(tags["train/loss"]) == (2 * 1352 // 32) // 20


def test_init_from_starts_a_run_from_another_runs_variables(tiny_config, tmp_path):
    """train.init_from: a fine-tune starts from the source run's params and batch statistics (the
    optimizer afresh); a missing or different source is a one-line config error."""
    import jax
    import optax

    from noisesnn_jax.errors import ConfigError
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.checkpoint import load_run
    from noisesnn_jax.run.state import build_model, create_state
    from noisesnn_jax.run.train import _init_from, train_and_evaluate

    src = str(tmp_path / "src")
    tiny_config.train.epochs = 1
    train_and_evaluate(config_lib.validate(tiny_config), src, progress=False, log=lambda m: None)
    _, model, want, ds = load_run(src, log=lambda m: None)
    state = create_state(model, optax.adam(1e-3), ds.input_shape, jax.random.key(5))
    state = _init_from(state, model, ds.input_shape, src, log=lambda m: None)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(want["params"])):
        np.testing.assert_array_equal(a, b)
    assert int(state.step) == 0
    with pytest.raises(ConfigError, match="has no checkpoints"):
        _init_from(state, model, ds.input_shape, str(tmp_path / "nowhere"), log=lambda m: None)
    tiny_config.model.hidden = (16,)
    other = build_model(tiny_config, ds.num_classes)
    with pytest.raises(ConfigError, match="holds a different model"):
        _init_from(create_state(other, optax.adam(1e-3), ds.input_shape, jax.random.key(0)), other, ds.input_shape,
                   src, log=lambda m: None)


def test_a_diverging_run_stops_saves_nothing_non_finite_and_resumes_with_a_lower_rate(tiny_config, tmp_path):
    """A non-finite loss or parameters stop the run with one line naming the step; no checkpoint of
    the diverged state is written; re-running with a lower learning rate resumes from the last
    finite checkpoint."""
    import jax
    import orbax.checkpoint as ocp

    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.checkpoint import open_manager

    workdir = str(tmp_path / "run")
    c = tiny_config
    c.train.epochs = 1
    c.train.checkpoint_every_steps = 5
    train_and_evaluate(c, workdir, progress=False, log=lambda m: None, stop_at_step=5)  # a good checkpoint
    c2 = config_lib.from_json(config_lib.to_json(c))
    c2.train.learning_rate = 1e30  # overflows within a few steps
    with pytest.raises(FloatingPointError, match=r"diverged .*step \d+.*lower --config.train.learning_rate"):
        train_and_evaluate(c2, workdir, progress=False, log=lambda m: None)
    manager = open_manager(workdir, 3)
    steps = manager.all_steps()
    assert steps and min(steps) == 5
    for step in steps:  # every checkpoint left holds finite parameters
        tree = manager.restore(step, args=ocp.args.StandardRestore())
        assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(tree["params"]))
    manager.close()
    c.train.learning_rate = 1e-3
    log = []
    train_and_evaluate(c, workdir, progress=False, log=log.append)
    assert any(f"resumed from step {max(steps)}" in line for line in log)


def test_a_second_run_on_a_workdir_in_use_is_refused_and_a_dead_holder_keeps_nothing(tiny_config, tmp_path):
    import subprocess
    import sys

    from noisesnn_jax.errors import ConfigError
    from noisesnn_jax.run.train import workdir_lock

    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with workdir_lock(workdir):
        with pytest.raises(ConfigError, match=r"in use by another training run \(pid \d+"):
            train_and_evaluate(tiny_config, workdir, progress=False, log=lambda m: None)
    # a holder killed with SIGKILL: the kernel drops its lock, and the next run trains
    code = ("import fcntl, os, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, os.path.join(workdir, "train.lock")], capture_output=True)
    assert proc.returncode == -9 and b"held" in proc.stdout
    tiny_config.train.epochs = 1
    assert train_and_evaluate(tiny_config, workdir, progress=False, log=lambda m: None)["epoch"] == 1


def test_loss_and_metrics_against_a_hand_computation():
    """Cross-entropy against label-smoothed one-hot targets, and accuracy from the argmax over the
    classes (the last axis), on a batch whose size differs from the number of classes."""
    from noisesnn_jax.run.train import loss_and_metrics

    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [1.0, 4.0, 0.0, 0.5]], np.float32)
    labels = np.array([0, 1, 1], np.int32)
    for smoothing in (0.0, 0.2):
        targets = np.full((3, 4), smoothing / 4) + (1 - smoothing) * np.eye(4)[labels]
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = -(targets * log_p).sum(-1).mean()
        args = (jax.numpy.asarray(logits), jax.numpy.asarray(labels), 4) + ((smoothing,) if smoothing else ())
        loss, metrics = loss_and_metrics(*args)  # the default is no smoothing
        np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
        assert float(metrics["loss"]) == float(loss)
        assert float(metrics["accuracy"]) == pytest.approx(2 / 3)  # rows 0 and 2 right, row 1 wrong


def test_train_step_trains_with_noise_and_updates_the_batch_statistics():
    """A training step runs the model in training mode: the noise key changes the step (noise is
    drawn), and the batch-norm statistics move towards the batch's."""
    import optax

    from noisesnn_jax.models import CNN
    from noisesnn_jax.run.state import create_state
    from noisesnn_jax.run.train import train_step

    model = CNN(channels=(4,), pool_after=(), num_classes=3)
    state = create_state(model, optax.sgd(0.1), (6, 6, 1), jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 6, 6, 1)) * 2 + 1
    y = np.array([0, 1, 2, 0, 1], np.int32)
    step = jax.jit(lambda s, key: train_step(s, x, y, key, num_classes=3)[0])
    after = {k: step(state, jax.random.key(k)) for k in (0, 1)}
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(after[0].batch_stats)):
        assert not np.allclose(np.asarray(a), np.asarray(b)), "batch statistics did not move"
    kernels = [np.asarray(s.params["conv0"]["kernel"]) for s in after.values()]
    assert not np.allclose(kernels[0], kernels[1]), "the noise key did not change the step"
    assert int(after[0].step) == 1
    # the running statistics carry the old ones: shifted old means give shifted new means
    shifted = state.replace(batch_stats=jax.tree.map(lambda a: a + 3.0, state.batch_stats))
    moved = step(shifted, jax.random.key(0))
    for a, b in zip(jax.tree.leaves(after[0].batch_stats), jax.tree.leaves(moved.batch_stats)):
        assert np.all(np.asarray(b) - np.asarray(a) > 1.0), "the step ignored the running statistics"


def test_train_step_defaults_timesteps_and_a_model_without_batch_norm():
    """No label smoothing by default; ``timesteps`` reaches the model (BPTT at T=2 is another
    step than T=1); a model without batch norm keeps ``batch_stats == {}``."""
    import optax

    from noisesnn_jax.models import MLP
    from noisesnn_jax.run.state import create_state
    from noisesnn_jax.run.train import train_step

    model = MLP(hidden=(8,), num_classes=3, batch_norm=False)
    state = create_state(model, optax.sgd(0.1), (6,), jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 6)) * 2 + 1
    y = np.array([0, 1, 2, 0, 1], np.int32)
    key = jax.random.key(2)

    def params(s):
        return np.concatenate([np.ravel(a) for a in jax.tree.leaves(s.params)])

    default = train_step(state, x, y, key, num_classes=3)[0]
    np.testing.assert_array_equal(params(default),
                                  params(train_step(state, x, y, key, num_classes=3, label_smoothing=0.0)[0]))
    assert not np.allclose(params(default),
                           params(train_step(state, x, y, key, num_classes=3, label_smoothing=0.5)[0]))
    assert not np.allclose(params(default), params(train_step(state, x, y, key, num_classes=3, timesteps=2)[0]))
    assert default.batch_stats == {}


_FULL_DISK = r'''
import json, os, resource, signal, sys
from noisesnn_jax.run import cli
from noisesnn_jax.run.train import _write_jsonl

workdir, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
code = cli.main(["train", "--workdir", workdir, "--no-progress"] + sys.argv[3:])
metrics = os.path.join(workdir, "full.jsonl")
with open(metrics, "w") as f:
    f.write(json.dumps({"pad": "x" * (limit - 40)}) + "\n")
size = os.path.getsize(metrics)
try:
    _write_jsonl(metrics, {"epoch": 2, "note": "y" * 100})
    error = None
except OSError as e:
    error = [e.errno, e.filename]
print(json.dumps({"code": code, "metrics_error": error, "size_before": size, "size_after": os.path.getsize(metrics)}))
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE")
def test_a_failing_checkpoint_or_metrics_write_is_one_error_and_keeps_what_was_saved(tiny_config, tmp_path):
    """A write that fails mid-run (here a file-size limit, EFBIG: the way a full disk fails, but on
    any machine) while saving a checkpoint: one line naming the step, the reason and the folder,
    exit 1 (orbax also logs its writer threads' errors); the half-written save is not a
    checkpoint, the earlier one and config.json are intact, and re-running resumes from it. A
    metrics line that cannot be written whole is cut back."""
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.checkpoint import open_manager

    workdir = str(tmp_path / "run")
    c = tiny_config
    c.train.epochs, c.train.checkpoint_every_steps, c.eval.timesteps = 1, 5, (1,)
    train_and_evaluate(c, workdir, progress=False, log=lambda m: None, stop_at_step=5)
    config_text = open(os.path.join(workdir, "config.json")).read()
    overrides = ["--config.dataset.name=digits", "--config.model.name=mlp", "--config.model.hidden=32,",
                 "--config.train.epochs=1", "--config.train.batch_size=32", "--config.train.learning_rate=0.003",
                 "--config.train.checkpoint_every_steps=5", "--config.eval.timesteps=1,"]
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, workdir, "12000", *overrides], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("noisesnn train: error")]
    assert out["code"] == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert re.search(r"writing the checkpoint of step 10 failed \(File too large\): it is not kept, and the "
                     r"previous checkpoints are intact", errors[0]) and "free disk space" in errors[0]
    assert open(os.path.join(workdir, "config.json")).read() == config_text  # rewritten whole, or not at all
    manager = open_manager(workdir, 3)
    assert manager.all_steps() == [5]
    manager.close()
    assert out["metrics_error"] == [errno.EFBIG, os.path.join(workdir, "full.jsonl")]
    assert out["size_after"] == out["size_before"]  # no half line left
    log = []
    c2 = config_lib.from_json(config_text)
    assert train_and_evaluate(c2, workdir, progress=False, log=log.append)["step"] == 42
    assert any("resumed from step 5" in line for line in log)
