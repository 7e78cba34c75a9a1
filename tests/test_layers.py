"""Layers (:mod:`noisesnn_jax.layers`): the QCFS activation and its exact conversion at T = L, the
activation switch's parameters named alike, and the functional layers in both time layouts."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Neuron, layers, neurons
from noisesnn_jax.layers import QCFS, Activation, SpikingNeuron, average_readout, flatten_features


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


def test_activation_switch_names_param_alike():
    """The spiking layer's learned threshold and QCFS's clip live under the same name."""
    x = jnp.ones((2, 3))
    a = Activation("qcfs").init(jax.random.key(0), x)
    s = Activation("spike", learn_threshold=True).init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(s)


def test_flatten_features_keeps_the_leading_axes_and_names_a_missing_channel_axis():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(flatten_features(x), x.reshape(2, 60))
    np.testing.assert_array_equal(flatten_features(x, 2), x.reshape(2, 3, 20))
    assert flatten_features(x, 1).shape == (2, 60)
    with pytest.raises(ValueError, match=re.escape(
            "flatten_features: an input of shape (4,) at timesteps=1 has no features to flatten past its [B] axes; "
            "images are channels-last [B, H, W, C] (add a channel axis with x[..., None])")):
        flatten_features(jnp.ones(4))
    with pytest.raises(ValueError, match=re.escape("of shape (3, 4) at timesteps=3 has no features to flatten past "
                                                   "its [T, B] axes")):
        flatten_features(jnp.ones((3, 4)), 3)
    with pytest.raises(ValueError, match=re.escape("of shape (2, 0, 3) at timesteps=1 has no features")):
        flatten_features(jnp.ones((2, 0, 3)))
    assert flatten_features(jnp.ones((1, 3, 1, 2))).shape == (1, 6)  # axes of size 1 are fine


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_pooling_with_time_and_batch_axes_pools_each_image_alone(kind, padding):
    """``[T, B, H, W, C]`` pooled in one call equals each ``[H, W, C]`` image pooled on its own."""
    x = jax.random.normal(jax.random.key(0), (3, 2, 7, 7, 4))
    pool = {"avg": nn.avg_pool, "max": nn.max_pool}[kind]
    got = layers.pool2d(x, kind, 3, 2, padding)
    want = jnp.stack([pool(x[t], (3, 3), strides=(2, 2), padding=padding) for t in range(3)])
    assert got.shape == want.shape == ((3, 2, 3, 3, 4) if padding == "VALID" else (3, 2, 4, 4, 4))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(layers.pool2d(x[0], kind, 3, 2, padding), want[0], rtol=1e-6)
    np.testing.assert_allclose(layers.pool2d(x[0], kind, 2, 2), pool(x[0], (2, 2), strides=(2, 2)), rtol=1e-6)


def test_global_average_pooling_and_add():
    x = jax.random.normal(jax.random.key(1), (3, 2, 5, 4, 6))
    np.testing.assert_allclose(layers.global_avg_pool(x), np.asarray(x).mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    a, b, c = (jnp.full((2, 3), v) for v in (1.0, 2.0, 4.0))
    np.testing.assert_array_equal(layers.add(a), a)
    np.testing.assert_array_equal(layers.add(a, b, c), jnp.full((2, 3), 7.0))


class _Readout(nn.Module):
    @nn.compact
    def __call__(self, logits, timesteps):
        return average_readout(self, logits, timesteps)


def test_average_readout_averages_over_time_and_sows_every_step():
    m = _Readout()
    z = jax.random.normal(jax.random.key(2), (4, 3, 5))
    assert m.init(jax.random.key(0), z, 4) == {}  # the variables hold no batch's logits
    out, sown = m.apply({}, z, 4, mutable=["readout"])
    np.testing.assert_allclose(out, z.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(sown["readout"]["step_logits"][0], z)
    out, sown = m.apply({}, z[0], 1, mutable=["readout"])
    np.testing.assert_array_equal(out, z[0])
    np.testing.assert_array_equal(sown["readout"]["step_logits"][0], z[0][None])
    with pytest.raises(ValueError, match=re.escape(
            "_Readout: the readout at timesteps=4 must be time-major [T=4, B, K]; got shape (3, 5). Keep the time "
            "axis through the network (flatten with layers.flatten_features(x, timesteps)), and give the first "
            "spiking layer constant=True")):
        m.apply({}, z[0], 4)
    with pytest.raises(ValueError, match=re.escape("got shape (5,)")):
        m.apply({}, z[0, 0], 4)
    with pytest.raises(ValueError, match=re.escape("got shape (4,)")):  # T values, no batch axis
        m.apply({}, z[:, 0, 0], 4)
    out, sown = m.apply({}, z[:, :, 0], 4, mutable=["readout"])  # one output per example: [T, B]
    np.testing.assert_allclose(out, z[:, :, 0].mean(0), rtol=1e-6)


def test_the_noise_key_warning_says_what_to_pass():
    layers._WARNED.discard("noise_key")
    with pytest.warns(UserWarning) as record:
        layers._warn_noise_key_unused()
        layers._warn_noise_key_unused()
    assert len(record) == 1 and str(record[0].message) == (
        "a 'noise' RNG was passed but the T=1 pass does not sample noise: it runs at the noise mean and, with batch "
        "norm, uses the running statistics. A training step passes train=True (model.apply(v, x, train=True, "
        "rngs={'noise': key}, mutable=['batch_stats'])); evaluation with sampled noise passes sample_noise=True")


class _Every(nn.Module):
    """Each functional layer once, between two spiking layers."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        mode = dict(timesteps=timesteps, train=train, sample_noise=sample_noise)
        h = SpikingNeuron(name="s1")(nn.Conv(4, (3, 3), name="conv")(x), constant=True, **mode)
        p = layers.pool2d(h, "max", 2, 2, "SAME")
        g = layers.global_avg_pool(p)
        a = layers.add(g, nn.Dense(4, name="skip")(flatten_features(p, timesteps)))
        return average_readout(self, nn.Dense(3, name="out")(SpikingNeuron(name="s2")(a, **mode)), timesteps)


def test_the_functional_layers_report_themselves_to_a_trace_by_name_and_input():
    """Folding, NIR export and early exit read these names and links (noisesnn_jax.tracing)."""
    from noisesnn_jax import tracing

    model, x = _Every(), jnp.ones((2, 6, 6, 1))
    variables = model.init(jax.random.key(0), x)
    graph = tracing.trace(model, variables, x)
    ops = [n.op for n in graph.nodes if n.op != "module"]
    assert ops == ["conv", "spiking", "pool", "global_avg_pool", "flatten", "dense", "add", "spiking", "dense",
                   "readout"]
    by_op = {n.op: n for n in graph.nodes}
    assert graph.source(by_op["pool"]).op == "spiking" and by_op["pool"].attrs == dict(
        kind="max", window=2, stride=2, padding="SAME")
    assert graph.source(by_op["global_avg_pool"]) is by_op["pool"]
    assert graph.source(by_op["flatten"]) is by_op["pool"]
    add_node = by_op["add"]
    assert [graph.source(add_node, i).op for i in range(2)] == ["global_avg_pool", "dense"]
    assert by_op["readout"].attrs == dict(timesteps=1) and graph.source(by_op["readout"]).op == "dense"
    assert by_op["readout"] is graph.readout()  # its output is what the model returned (Node.output)
    np.testing.assert_array_equal(by_op["readout"].output, model.apply(variables, x))
    with tracing._recording() as recorder:  # the default padding, as NIR export reads it
        layers.pool2d(x, "avg", 2, 2)
    assert recorder.nodes[0].attrs == dict(kind="avg", window=2, stride=2, padding="VALID")
