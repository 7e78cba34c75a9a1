"""Dynamic T: per-sample early exit equals its offline simulation, the exact rule never changes a
prediction, the readout bound holds on real per-step logits, and the command reports it."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

from noisesnn_jax import evaluate, models, ops, pieces
from noisesnn_jax.convert import fold_batchnorm
from noisesnn_jax.early_exit import ExitRule, predict_early_exit, readout_bound, simulate_rule
from noisesnn_jax.errors import ConfigError
from noisesnn_jax.run import cli


def _net(model, shape, seed=0):
    x = np.asarray(jax.random.uniform(jax.random.key(seed + 10), shape))
    v = model.init(jax.random.key(seed), x)
    return fold_batchnorm(model, v, x) + (x,)


CNN = models.CNN(channels=(4, 8), pool_after=(0, 1))


def test_rules_parse_and_bad_rules_are_named():
    assert ExitRule.parse("exact") == ExitRule("exact", 0.0, 1)
    assert ExitRule.parse("margin:2.5,min=2") == ExitRule("margin", 2.5, 2)
    assert ExitRule.parse("confidence:0.9").threshold == 0.9
    for text, match in [("fastest", "is invalid; write exact"), ("margin:x", "invalid"), ("confidence:1.5", r"in \(0, 1\)"),
                        ("margin:1,max=3", "min=K"), ("exact:3", "no threshold")]:
        with pytest.raises(ConfigError, match=match):
            ExitRule.parse(text)


@pytest.mark.parametrize("in_pieces,chunks", [(False, None), (True, [3]), (False, [2, 5])],
                         ids=["whole-doubling", "pieces-by3", "whole-2-then-5"])  # and step by step inside
def test_chunked_run_with_compaction_equals_its_simulation(in_pieces, chunks, monkeypatch):
    """The margin rule run in chunks of steps (the batch compacted between chunks; the rows whole,
    or in pieces of 8 as on a CPU with a small cache) makes the decisions computed offline from the
    fast path's per-step readout, whatever the chunks; a sample's events count only its own steps;
    with no stop, its synaptic events are the operation count of the fixed-T run."""
    model, v, x = _net(CNN, (40, 12, 12, 1))
    if in_pieces:
        monkeypatch.setattr(pieces, "microbatch_size", lambda model, variables, x, T: min(8, x.shape[0]))
    logits = evaluate.step_logits(model, v, x, 8)
    spread = np.ptp(np.asarray(logits).mean(0), axis=-1)
    rule = ExitRule("margin", float(np.quantile(spread, 0.3)) / 2, min_steps=2 if chunks == [3] else 1)
    got = predict_early_exit(model, v, x, 8, rule, chunks=chunks)
    want = simulate_rule(logits, rule)
    np.testing.assert_array_equal(got["steps"], want["steps"])
    np.testing.assert_array_equal(got["predictions"], want["predictions"])
    assert 1 < len(np.unique(got["steps"])) and got["steps"].min() < 8  # samples stopped at several steps
    assert (got["steps"] >= rule.min_steps).all()
    # events: each sample's own steps only, as the step-by-step run counts them
    by_step = predict_early_exit(model, v, x, 8, rule, chunks=[1])
    np.testing.assert_allclose(got["events"], by_step["events"], rtol=1e-6)
    assert not predict_early_exit(model, v, x, 8, rule, chunks=chunks, count_events=False)["events"].any()
    never = predict_early_exit(model, v, x, 8, ExitRule("margin", 1e9), chunks=chunks)
    assert (never["steps"] == 8).all()
    np.testing.assert_allclose(never["events"].mean(), ops.count_ops(model, v, x, 8)["sops"], rtol=1e-6)


def test_chunk_schedules_and_padded_sizes():
    from noisesnn_jax.early_exit import _bucket, chunk_schedule
    assert chunk_schedule(8) == [1, 1, 2, 4] and chunk_schedule(6) == [1, 1, 2, 2]
    assert chunk_schedule(8, min_steps=3) == [3, 3, 2] and chunk_schedule(1) == [1]
    assert chunk_schedule(8, [3]) == [3, 3, 2] and chunk_schedule(8, [2, 5]) == [2, 5, 1]
    for bad in ([], [0], [1.5], [True]):
        with pytest.raises(ConfigError, match="chunks"):
            chunk_schedule(8, bad)
    sizes = {n: _bucket(n) for n in range(1, 2000)}
    assert all(n <= b <= max(8, n + n // 8 + 1) for n, b in sizes.items())  # at most an eighth of padding
    assert len(set(sizes.values())) <= 8 * 11  # eight sizes per octave


def test_readout_bound_holds_for_every_step():
    model = models.CNN(channels=(4, 8), pool_after=(0, 1), learn_threshold=True)
    model, v, x = _net(model, (64, 12, 12, 1), seed=1)
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 1.7 if p[-1].key == "threshold" else a, v)  # spike amplitudes other than 1
    D = readout_bound(model, v, x[:8])
    z = np.asarray(evaluate.step_logits(model, v, x, 8), np.float64)  # [T, B, K]
    diff = z[..., :, None] - z[..., None, :]  # z_c - z_k
    assert (diff >= D - 1e-4).all()


@pytest.mark.parametrize("model,shape", [(CNN, (64, 12, 12, 1)), (models.MLP(hidden=(16, 16)), (64, 6, 6, 1))],
                         ids=["cnn", "mlp"])
def test_exact_rule_never_changes_a_prediction(model, shape):
    """With the readout's weights small against its biases (so the bound can act), the exact rule
    stops samples before T and every prediction is the full-T one."""
    model, v, x = _net(model, shape, seed=2)
    v["params"]["readout"]["kernel"] = 0.2 * v["params"]["readout"]["kernel"]
    v["params"]["readout"]["bias"] = 0.3 * jax.random.normal(jax.random.key(5), v["params"]["readout"]["bias"].shape)
    T = 16
    full = np.asarray(evaluate.predict(model, v, x, T)[0]).argmax(-1)
    r = predict_early_exit(model, v, x, T, ExitRule("exact"))
    np.testing.assert_array_equal(r["predictions"], full)
    if isinstance(model, models.MLP):
        assert (r["steps"] < T).any() and (r["steps"] == T).any()


def test_exact_rule_needs_no_nir():
    """The exact rule reads the network's trace (noisesnn_jax.tracing), not its NIR export: it runs
    without importing the optional ``nir`` package or the interop layer."""
    code = ("import sys, jax, numpy as np, noisesnn_jax, noisesnn_jax.early_exit as ee\n"
            "model = noisesnn_jax.models.MLP(hidden=(8,))\n"
            "x = np.asarray(jax.random.uniform(jax.random.key(0), (4, 3, 3, 1)))\n"
            "v = model.init(jax.random.key(1), x)\n"
            "r = ee.predict_early_exit(model, v, x, 2, ee.ExitRule('exact'))\n"
            "assert r['steps'].shape == (4,) and ee.readout_bound(model, v, x).shape == (10, 10)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nir' or m.startswith('noisesnn_jax.interop')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_cli_early_exit_report(tiny_config, tmp_path, capsys):
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.train import train_and_evaluate

    w = str(tmp_path / "run")
    tiny_config.train.epochs = 1
    train_and_evaluate(config_lib.validate(tiny_config), w, progress=False, log=lambda m: None)
    out = str(tmp_path / "ee.json")
    assert cli.main(["evaluate", "--workdir", w, "--timesteps", "8", "--early-exit", "margin:1", "--json", out]) == 0
    text = capsys.readouterr().out
    assert "| fixed T=8 |" in text and "| early exit |" in text and "steps used:" in text
    import json
    r = json.load(open(out))
    assert sum(r["steps_histogram"].values()) == r["images"] and 1 <= r["mean_steps"] <= 8
    assert cli.main(["evaluate", "--workdir", w, "--early-exit", "quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "early-exit rule 'quick' is invalid" in err[0]
