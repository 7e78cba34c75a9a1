"""Flax NNX through the bridge (noisesnn_jax.interop.nnx_bridge): the same variables and outputs as the
Linen models in both time modes, and training under nnx.jit / nnx.grad with noise from nnx.Rngs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from noisesnn_jax import models
from noisesnn_jax.interop import nnx_bridge


def _data(shape=(8, 12, 12, 1)):
    x = jnp.asarray(np.random.default_rng(0).random(shape, np.float32))
    return x, jnp.arange(shape[0]) % 10


@pytest.mark.parametrize("model", [models.CNN(channels=(4, 8), pool_after=(0, 1)),
                                   models.ResNet(stage_sizes=(1, 1), widths=(4, 8))],
                         ids=["cnn", "resnet"])
def test_same_variables_and_outputs_in_both_time_modes(model):
    x, _ = _data((4, 8, 8, 3) if isinstance(model, models.ResNet) else (4, 12, 12, 1))
    v = model.init(jax.random.key(3), x)
    net = nnx_bridge.to_nnx(model, x, rngs=nnx.Rngs(params=0, noise=1), variables=v)
    back = nnx_bridge.linen_variables(net)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(dict(v))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), back, dict(v)))
    for T in (1, 8):
        np.testing.assert_array_equal(net(x, timesteps=T), model.apply(v, x, timesteps=T))
    key = jax.random.key(9)
    sampled = net(x, sample_noise=True, rngs=nnx.Rngs(noise=key))
    np.testing.assert_array_equal(sampled, model.apply(v, x, sample_noise=True,
                                                       rngs={"noise": nnx.Rngs(noise=key).noise()}))


def _loss(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_nnx_grad_equals_linen_grad_with_the_same_noise():
    model = models.CNN(channels=(4, 8), pool_after=(0, 1))
    x, y = _data()
    v = model.init(jax.random.key(0), x)
    net = nnx_bridge.to_nnx(model, x, rngs=nnx.Rngs(params=0, noise=1), variables=v)
    key = jax.random.key(4)

    @nnx.jit
    def nnx_step(net, x, y):
        return nnx.value_and_grad(lambda n: _loss(n(x, train=True, mutable=["batch_stats"],
                                                    rngs=nnx.Rngs(noise=key)), y))(net)

    loss, grads = nnx_step(net, x, y)

    def linen_loss(params):
        logits, new = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                                  rngs={"noise": nnx.Rngs(noise=key).noise()}, mutable=["batch_stats"])
        return _loss(logits, y), new

    (want_loss, new), want = jax.jit(jax.value_and_grad(linen_loss, has_aux=True))(v["params"])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    got = nnx.to_pure_dict(grads)
    for path, g in jax.tree_util.tree_leaves_with_path(want):
        node = got
        for p in path:
            node = node[p.key]
        np.testing.assert_allclose(node, g, rtol=1e-5, atol=1e-7)
    stats = nnx_bridge.linen_variables(net)["batch_stats"]  # updated in place by the training call
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats, new["batch_stats"])


def test_nnx_training_loop_learns():
    """The README's NNX loop: nnx.Optimizer, noise from the module's own nnx.Rngs."""
    model = models.CNN(channels=(4, 8), pool_after=(0, 1))
    x, y = _data()
    net = nnx_bridge.to_nnx(model, x, rngs=nnx.Rngs(params=0, noise=1))
    opt = nnx.Optimizer(net, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda n: _loss(n(x, train=True, mutable=["batch_stats"]), y))(net)
        opt.update(net, grads)
        return loss

    losses = [float(step(net, opt, x, y)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    acc = float(jnp.mean(jnp.argmax(net(x, timesteps=4), -1) == y))
    assert acc >= 0.75
