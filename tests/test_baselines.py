"""Baselines (:mod:`noisesnn_jax.baselines`): BPTT, classic ANN->SNN conversion (threshold balancing),
QCFS and clip-trained conversion (the QCFS layer: tests/test_layers.py; operation counts: test_ops.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Neuron, baselines, evaluate
from noisesnn_jax.models import CNN, MLP
from noisesnn_jax.run.train import train_and_evaluate
from noisesnn_jax.run.workdir import evaluate_run


def test_threshold_balancing_equals_numpy_percentile():
    ann = CNN(channels=(4, 8), pool_after=(0,), num_classes=3, activation="relu")
    xs = [np.random.default_rng(i).normal(size=(5, 8, 8, 1)).astype(np.float32) for i in range(3)]
    v = ann.init({"params": jax.random.key(0)}, jnp.asarray(xs[0]))
    th = baselines.activation_statistics(ann, v, xs, 99.9)
    th_max = baselines.activation_statistics(ann, v, xs, 100.0)
    # direct computation: the ReLU outputs, by hand
    p = v["params"]

    def bn(h, name):
        s = v["batch_stats"][name]
        return (h - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p[name]["scale"] + p[name]["bias"]

    a0, a1 = [], []
    for x in xs:
        h0 = np.maximum(bn(jax.lax.conv_general_dilated(x, p["conv0"]["kernel"], (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")), "bn0"), 0)
        a0.append(np.asarray(h0).ravel())
        pooled = nn.avg_pool(jnp.asarray(h0), (2, 2), strides=(2, 2))
        h1 = np.maximum(bn(jax.lax.conv_general_dilated(pooled, p["conv1"]["kernel"], (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")), "bn1"), 0)
        a1.append(np.asarray(h1).ravel())
    for name, acts in (("act0", a0), ("act1", a1)):
        np.testing.assert_allclose(th[name], np.percentile(np.concatenate(acts), 99.9), rtol=1e-4)
        np.testing.assert_allclose(th_max[name], np.concatenate(acts).max(), rtol=1e-4)


def test_converted_relu_network_approaches_ann_with_t():
    """Max-norm conversion: the SNN's logits approach the ANN's as T grows (v_init = theta/2)."""
    ann = MLP(hidden=(32, 32), num_classes=4, activation="relu", batch_norm=False)
    x = jax.random.normal(jax.random.key(1), (64, 12))
    v = ann.init({"params": jax.random.key(2)}, x)
    th = baselines.activation_statistics(ann, v, [np.asarray(x)], 100.0)
    snn, sv = baselines.ann_to_snn(ann, v, th, v_init=0.5)
    ref = ann.apply(v, x)
    errs = [float(jnp.abs(snn.apply(sv, x, timesteps=T) - ref).mean()) for T in (4, 32, 256)]
    assert errs[2] < errs[0] and errs[2] < 0.05 * float(jnp.abs(ref).mean()) + 1e-3


def test_qcfs_model_converts():
    model = CNN(channels=(4, 8), pool_after=(0,), num_classes=3, activation="qcfs", qcfs_levels=4)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    v = model.init({"params": jax.random.key(0)}, x)
    snn, sv = baselines.ann_to_snn(model, v, None, v_init=0.5)
    assert snn.activation == "spike" and snn.noise.kind == "none" and snn.noise.mean == 0.5
    logits, rates = evaluate.predict(snn, sv, x, 8)
    assert logits.shape == (4, 3) and set(rates) == {"act0", "act1"}


@pytest.mark.parametrize("method", ["bptt", "convert", "qcfs"])
def test_baseline_trains_and_converts(tiny_config, tmp_path, method):
    c = tiny_config
    c.method = method
    c.train.epochs = 1
    c.train.timesteps = 2
    if method == "bptt":
        c.noise.kind, c.noise.mean = "none", 0.0
        c.train.remat = True
    if method == "convert":
        c.convert.num_batches = 2
    w = str(tmp_path / method)
    last = train_and_evaluate(c, w, progress=False, log=lambda m: None)
    assert last["test_accuracy_t1"] > 0.3
    r = evaluate_run(w, (1, 4), log=lambda m: None)
    assert r["method"] == method and r["activation"] == "spike" and len(r["accuracy"]) == 2
    assert r["ops"]["4"]["sops"] > 0
    if method != "bptt":
        assert r["ann_accuracy"] > 0.3
    if method == "convert":
        assert set(r["thresholds"]) == {"act0"}


@pytest.mark.parametrize("learn", [False, True])
def test_clip_trained_ann_runs_as_the_spiking_network_it_bounds(learn):
    """Clip-trained conversion (TCL): the ANN computes clip(x, 0, theta); its weights run as IF
    neurons started at theta/2 whose rates approach the clip as T grows (exactly, up to 1/T)."""
    ann = MLP(hidden=(16, 16), num_classes=3, activation="clip", learn_threshold=learn, batch_norm=False,
              neuron=Neuron(threshold=0.7))
    x = jax.random.normal(jax.random.key(3), (40, 6))
    v = ann.init({"params": jax.random.key(4)}, x)
    if learn:  # a trained clip: per-channel thresholds the spiking layer must take over
        assert v["params"]["act0"]["neuron"]["threshold"].shape == (16,)
        v = jax.tree_util.tree_map_with_path(
            lambda p, a: a * jnp.linspace(0.5, 1.5, a.shape[0]) if "threshold" in jax.tree_util.keystr(p) else a, v)
    else:
        assert "act0" not in v["params"]
    h = v["params"]["dense0"]
    a0 = np.asarray(x @ h["kernel"] + h["bias"])
    theta = np.asarray(v["params"]["act0"]["neuron"]["threshold"]) if learn else 0.7
    np.testing.assert_allclose(ann.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]
                               ["intermediates"]["act0"]["__call__"][0], np.clip(a0, 0, theta), rtol=1e-5, atol=1e-6)
    snn, sv = baselines.ann_to_snn(ann, v, None, v_init=0.5)
    assert snn.activation == "spike" and snn.noise.kind == "none" and snn.noise.mean == 0.5
    ref = ann.apply(v, x)
    errs = [float(jnp.abs(snn.apply(sv, x, timesteps=T) - ref).max()) for T in (4, 64, 1024)]
    assert errs[0] > errs[2] and errs[2] < 0.02 * float(jnp.abs(ref).max())


def test_qcfs_official_variant_one_lambda_per_layer_from_8():
    """The official QCFS code: one lam per layer, initialized at 8; conversion broadcasts it to the
    layer's channels, and the converted network at T = L equals the QCFS ANN (no batch norm)."""
    ann = MLP(hidden=(12,), num_classes=3, activation="qcfs", qcfs_levels=4, qcfs_init=8.0, qcfs_per_layer=True,
              batch_norm=False)
    x = 6 * jax.random.normal(jax.random.key(5), (30, 5))
    v = ann.init({"params": jax.random.key(6)}, x)
    np.testing.assert_array_equal(v["params"]["act0"]["neuron"]["threshold"], [8.0])
    snn, sv = baselines.ann_to_snn(ann, v, None, v_init=0.5)
    np.testing.assert_array_equal(sv["params"]["act0"]["neuron"]["threshold"], np.full(12, 8.0))
    np.testing.assert_allclose(snn.apply(sv, x, timesteps=4), ann.apply(v, x), rtol=1e-5, atol=1e-5)
