"""Training, resume, checkpoints and the ``noisesnn`` command, including each bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from noisesnn_jax.errors import CheckpointError
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


TINY = ["--config.dataset.name=digits", "--config.model.name=mlp", "--config.model.hidden=32",
        "--config.train.epochs=1", "--config.train.batch_size=128"]


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


def test_evaluation_records_provenance_and_cli_basics(tiny_config, tmp_path, capsys):
    from noisesnn_jax import __version__
    from noisesnn_jax.run.workdir import evaluate_run
    w = str(tmp_path / "w")
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    log: list[str] = []
    result = evaluate_run(w, (1, 4), log=log.append)
    p = result["provenance"]
    assert p["checkpoint_step"] == 1352 // 32 and p["noisesnn_jax"] == __version__ and p["jax"] == jax.__version__
    assert any(m.startswith("T=4: accuracy") for m in log)  # progress while evaluating
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert __version__ in capsys.readouterr().out
    assert cli.main(["config", "--config.train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out
    assert cli.main(["config", "--config.train.epochz=7"]) == 2
    assert "epochz" in capsys.readouterr().err


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
