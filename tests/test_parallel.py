"""Data parallelism on 8 fake CPU devices: the sharded step equals the single-device step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np, optax
    assert jax.device_count() == 8, jax.devices()
    from noisesnn_jax.models import CNN
    from noisesnn_jax import parallel
    from noisesnn_jax.run.state import create_state
    from noisesnn_jax.run.train import train_step
    model = CNN(channels=(8, 16), pool_after=(0,), num_classes=10)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(3, 32, 12, 12, 1)).astype(np.float32)
    ys = rng.integers(0, 10, size=(3, 32)).astype(np.int32)
    key = jax.random.key(7)
    step = functools.partial(train_step, num_classes=10)
    single = create_state(model, optax.adam(1e-2), (12, 12, 1), jax.random.key(0))
    one = jax.jit(step)
    mesh = parallel.make_mesh()
    sharded = parallel.replicate(mesh, create_state(model, optax.adam(1e-2), (12, 12, 1), jax.random.key(0)))
    many = parallel.shard_train_step(mesh, step)
    for x, y in zip(xs, ys):
        single, m1 = one(single, x, y, key)
        sharded, m8 = many(sharded, parallel.global_batch(mesh, x), parallel.global_batch(mesh, y), key)
        assert abs(float(m1["loss"]) - float(m8["loss"])) < 1e-5, (m1, m8)
    assert sharded.params["conv0"]["kernel"].sharding.is_fully_replicated
    for a, b in zip(jax.tree_util.tree_leaves(single.params), jax.tree_util.tree_leaves(sharded.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(single.batch_stats), jax.tree_util.tree_leaves(sharded.batch_stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # one BPTT step (T=3, the baseline) on the sharded batch == the same step on one device
    bptt = functools.partial(train_step, num_classes=10, timesteps=3)
    b1, n1 = jax.jit(bptt)(single, xs[0], ys[0], key)
    b8, n8 = parallel.shard_train_step(mesh, bptt, donate=False)(
        parallel.replicate(mesh, single), parallel.global_batch(mesh, xs[0]), parallel.global_batch(mesh, ys[0]), key)
    assert abs(float(n1["loss"]) - float(n8["loss"])) < 1e-5, (n1, n8)
    for a, b in zip(jax.tree_util.tree_leaves(b1.params), jax.tree_util.tree_leaves(b8.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # multi-step evaluation sharded over the 8 devices == one device (37 rows: a padded last batch)
    from noisesnn_jax import convert, evaluate
    from noisesnn_jax.run.state import variables_of
    fm, fv = convert.fold_batchnorm(model, variables_of(single), xs[0])
    xe = rng.normal(size=(37, 12, 12, 1)).astype(np.float32)
    ye = rng.integers(0, 10, size=37).astype(np.int32)
    for T in (1, 4):
        a = evaluate.evaluate(fm, fv, xe, ye, T, batch_size=16)
        b = evaluate.evaluate(fm, fv, xe, ye, T, batch_size=16, mesh=mesh)
        assert a["correct"] == b["correct"] and a["total"] == b["total"] == 37, (T, a, b)
        a = evaluate.evaluate(fm, fv, xe[:32], ye[:32], T, batch_size=16)
        b = evaluate.evaluate(fm, fv, xe[:32], ye[:32], T, batch_size=16, mesh=mesh)
        for k in a["firing_rates"]:
            assert abs(a["firing_rates"][k] - b["firing_rates"][k]) < 1e-6, (k, a, b)
    print("OK")
""")


def test_sharded_step_equals_single_device(train_processes):
    """3 noisy T=1 steps with batch norm: loss within 1e-5, parameters and batch-norm statistics
    within rtol 1e-4 / atol 1e-5 (the all-reduce sums in another order); the same for one BPTT
    step at T=3. Then T=1 and T=4 evaluation sharded over the 8 devices: the same correct count as
    one device, the same firing rates within 1e-6."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=train_processes.env(8), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


TRAIN_SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.checkpoint import load_run
    from noisesnn_jax.run.train import train_and_evaluate
    c = config_lib.get_config()
    config_lib.apply_overrides(c, ["--config.dataset.name=digits", "--config.model.name=mlp",
        "--config.model.hidden=32", "--config.train.epochs=1", "--config.train.batch_size=64"])
    train_and_evaluate(c, sys.argv[1], progress=False)
    _, _, v, _ = load_run(sys.argv[1], log=lambda m: None)
    np.save(sys.argv[1] + "/kernel.npy", np.asarray(v["params"]["dense0"]["kernel"]))
""")


def test_training_loop_on_8_devices_matches_one(tmp_path, train_processes):
    """The whole loop (data parallel, checkpoint, restore) on 8 fake devices ends where 1 device does.

    Over 21 steps an all-reduce summed in another order can flip a single spike, and Adam carries
    the difference on: most weights agree to 1e-4, none differs by more than 0.02."""
    out = {}
    for n in (1, 8):
        w = str(tmp_path / f"d{n}")
        proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, w], env=train_processes.env(n), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("data parallel over 8 devices" in proc.stdout) == (n == 8)
        out[n] = np.load(w + "/kernel.npy")
    diff = np.abs(out[1] - out[8])
    assert np.median(diff) < 1e-4 and diff.max() < 0.02, (np.median(diff), diff.max())


@pytest.mark.slow  # multi-process or long end-to-end: make test runs it, make test-fast skips it
def test_sigterm_on_one_of_two_processes_stops_both_and_resumes_exactly(tmp_path, train_processes):
    """Preemption that reaches one host only: both processes stop together at the next sync point
    with a checkpoint (exit 143), and re-running both ends where an uninterrupted run ends.

    Two processes on 127.0.0.1 (jax.distributed.initialize, gloo), one device each, train on the
    same global batches as one process with two devices and reach the same parameters (rtol 1e-5);
    only process 0 logs. (An uninterrupted two-process run: test_tfds.py's two-process test.)"""
    import signal

    args = ["--no-progress", "--config.dataset.name=digits", "--config.model.name=mlp",
            "--config.model.hidden=32", "--config.train.epochs=3", "--config.train.batch_size=32"]
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    marker = str(tmp_path / "inside-epoch-2")
    # From step 60 (inside epoch 2 of 3, 42 steps each) every step takes 0.5 s: the signal lands
    # mid-training on a machine of any speed.
    procs = train_processes.start_two(two, args, command=train_processes.command(60, marker))
    train_processes.wait_for(marker, procs[0])
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outs
    assert "saved a checkpoint" in outs[0]
    with open(os.path.join(two, "metrics.jsonl")) as f:
        assert len(f.read().splitlines()) == 1  # it stopped inside epoch 2
    outs = train_processes.run_two(two, args)
    assert "resumed from step" in outs[0] and "data parallel over 2 devices (2 processes)" in outs[0]
    assert "epoch" not in outs[1]  # logs from process 0 only
    train_processes.run_one(one, args)
    train_processes.assert_same_params(two, one, ("dense0", "readout"))


@pytest.mark.slow
def test_a_dead_peer_stops_the_other_process_quickly_and_the_run_resumes(tmp_path, train_processes):
    """SIGKILL of one process of a two-process run: the other leaves within seconds, never hanging
    in a collective: one clear line (exit 3) when a worker dies; JAX's own fatal message when the
    coordinator (process 0) dies. The epoch-1 checkpoint stays intact and re-running both resumes."""
    import signal
    import time

    args = ["--no-progress", "--heartbeat-timeout=10", "--config.dataset.name=digits", "--config.model.name=mlp",
            "--config.model.hidden=32", "--config.train.epochs=2", "--config.train.batch_size=32"]
    w = str(tmp_path / "w")
    ours = "another process of this run stopped responding"
    # a dead coordinator: JAX's own fatal message, or ours when the survivor's collective fails first
    for victim, code, says in ((1, 3, (ours,)), (0, None, (ours, "another task died"))):
        marker = str(tmp_path / f"slow-{victim}")
        # from step 50 (inside epoch 2 of 2, 42 steps each; epoch 1 is checkpointed) a step takes 0.5 s
        procs = train_processes.start_two(w, args, command=train_processes.command(50, marker))
        train_processes.wait_for(marker, procs[0])
        time.sleep(1.0)
        procs[victim].send_signal(signal.SIGKILL)
        start = time.time()
        out = procs[1 - victim].communicate(timeout=120)[0]
        procs[victim].communicate()
        assert time.time() - start < 60, f"the survivor took {time.time() - start:.0f} s"
        assert procs[1 - victim].returncode != 0 and any(m in out for m in says), out[-3000:]
        if code is not None:
            assert procs[1 - victim].returncode == code and "re-run the command on every host" in out
    steps = sorted(int(d) for d in os.listdir(os.path.join(w, "checkpoints")) if d.isdigit())
    assert steps[-1] == 42, steps
    outs = train_processes.run_two(w, args)
    assert "resumed from step 42" in outs[0]
