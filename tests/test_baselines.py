"""Baselines: BPTT, classic ANN->SNN conversion (threshold balancing), QCFS; operation counts."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Neuron, Noise, baselines, evaluate, neurons, ops
from noisesnn_jax.layers import QCFS, Activation
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


def test_qcfs_activation_and_exact_conversion_at_t_equals_l():
    """QCFS h(x) = lam*clip(floor(xL/lam + 1/2)/L, 0, 1); an IF neuron with threshold lam started at
    lam/2 fires exactly h(x)/lam * T times in T = L steps for constant input."""
    L, lam = 4, 2.0
    x = jnp.linspace(-1, 3, 41) + 0.01
    q = QCFS(levels=L, init_threshold=lam)
    v = q.init(jax.random.key(0), x[:, None])
    h = q.apply(v, x[:, None])[:, 0]
    ref = lam * np.clip(np.floor(np.asarray(x) * L / lam + 0.5) / L, 0, 1)
    np.testing.assert_allclose(np.asarray(h), ref, atol=1e-6)
    spikes, _ = neurons.run_constant(Neuron(lam, v_init=lam / 2), x, L)
    np.testing.assert_allclose(np.asarray(spikes.mean(0)) * lam, ref, atol=1e-6)
    g = jax.grad(lambda lam_: q.apply({"params": {"threshold": lam_}}, x[:, None]).sum())(jnp.array([lam]))
    assert np.isfinite(np.asarray(g)).all()


def test_qcfs_model_converts():
    model = CNN(channels=(4, 8), pool_after=(0,), num_classes=3, activation="qcfs", qcfs_levels=4)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    v = model.init({"params": jax.random.key(0)}, x)
    snn, sv = baselines.ann_to_snn(model, v, None, v_init=0.5)
    assert snn.activation == "spike" and snn.noise.kind == "none" and snn.noise.mean == 0.5
    logits, rates = evaluate.predict(snn, sv, x, 8)
    assert logits.shape == (4, 3) and set(rates) == {"act0", "act1"}


def test_remat_over_time_gives_same_gradients():
    xs = jax.random.normal(jax.random.key(4), (6, 10)) + 0.5
    n = Neuron(1.0, surrogate="atan")
    f = lambda xs, remat: neurons.run(n, xs, 0.0, remat=remat)[0].sum()
    g0 = jax.grad(f)(xs, False)
    g1 = jax.grad(f)(xs, True)
    np.testing.assert_allclose(np.asarray(g0), np.asarray(g1), rtol=1e-6)


def test_connections_hand_count():
    """A 3x3 'SAME' conv: an input at a corner reaches 4 outputs, at the centre 9; dense: nnz * out."""
    conv = nn.Conv(5, (3, 3), padding="SAME")
    a = np.zeros((1, 3, 3, 1), np.float32)
    a[0, 0, 0, 0] = 1.0
    assert float(ops.connections(conv, jnp.asarray(a))) == 4 * 5
    a[0, 1, 1, 0] = 0.5
    assert float(ops.connections(conv, jnp.asarray(a))) == (4 + 9) * 5
    assert float(ops.connections(conv, jnp.ones((1, 3, 3, 2)))) == (4 * 4 + 4 * 6 + 9) * 2 * 5
    dense = nn.Dense(7)
    assert float(ops.connections(dense, jnp.array([[0.0, 1.0, 2.0, 0.0]]))) == 2 * 7


def test_count_ops_on_tiny_mlp_by_hand():
    """MLP 3 -> 4 spiking -> 2: the first layer is 12 MACs per image, once; the readout costs 2
    accumulates per spike, summed over T."""
    model = MLP(hidden=(4,), num_classes=2, batch_norm=False, noise=Noise("none", mean=0.0))
    x = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    v = model.init({"params": jax.random.key(0)}, x)
    # hidden weights: neuron j receives x0 * w_j, w = 0.25, 0.5, 0.75, 1.25 (exact in binary), no bias
    params = dict(v["params"])
    params["dense0"] = {"kernel": jnp.zeros((3, 4)).at[0].set(jnp.array([0.25, 0.5, 0.75, 1.25])),
                        "bias": jnp.zeros(4)}
    v = {"params": params}
    T = 10
    counts = ops.count_ops(model, v, x, T)
    # image 0: IF counts over 10 steps from v0 = 0: floor(10 * w) capped at 10 -> 2, 5, 7, 10 spikes
    # image 1: no input, no spikes. Per image: (2 + 5 + 7 + 10) * 2 / 2 images.
    assert counts["first_layer_macs"] == 12
    assert counts["layers"]["readout"]["sops"] == pytest.approx((2 + 5 + 7 + 10) * 2 / 2)
    assert counts["ann_macs"] == 12 + 8
    assert counts["snn_energy_uj"] == pytest.approx((4.6 * 12 + 0.9 * 24) * 1e-6)


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


def test_activation_switch_names_param_alike():
    """The spiking layer's learned threshold and QCFS's clip live under the same name."""
    x = jnp.ones((2, 3))
    a = Activation("qcfs").init(jax.random.key(0), x)
    s = Activation("spike", learn_threshold=True).init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(s)


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
