"""Batch-norm folding (:mod:`noisesnn_jax.convert`): exact on the zoo in both time modes, following the
dataflow (not the names) of a user's model, and saying why a model cannot be folded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import MODELS, _trained_like
from noisesnn_jax import Noise, convert, evaluate, ops
from noisesnn_jax.layers import SpikingNeuron, average_readout, flatten_features


@pytest.mark.parametrize("name", ["cnn-avg", "cnn-max-lif-zero", "mlp-learned", "resnet-basic",
                                  "resnet-bottleneck-imagenet", "vgg-tiny"])
def test_batchnorm_folding_is_exact(name):
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(8), shape) * 2.0
    v = _trained_like(model, x)
    fm, fv = convert.fold_batchnorm(model, v, x)
    assert fm.fold_bn and "batch_stats" not in fv
    assert not any(k.startswith("bn") for k in fv["params"])
    for T in (1, 6):
        a = model.apply(v, x, timesteps=T)
        b = fm.apply(fv, x, timesteps=T)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


class UserNet(nn.Module):
    """A user's model with batch norms under its own names and a fold_bn field."""

    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        mode = dict(timesteps=timesteps, train=train, sample_noise=sample_noise)
        x = nn.Conv(6, (3, 3), use_bias=self.fold_bn, name="stem")(x)
        if not self.fold_bn:
            x = nn.BatchNorm(use_running_average=not train, name="norm_a")(x)
        x = SpikingNeuron(noise=Noise("uniform"))(x, constant=True, **mode)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.Dense(12, use_bias=self.fold_bn, name="hidden")(flatten_features(x, timesteps))
        if not self.fold_bn:
            x = nn.BatchNorm(use_running_average=not train, epsilon=1e-3, name="norm_b")(x)
        x = SpikingNeuron()(x, **mode)
        return average_readout(self, nn.Dense(5, name="out")(x), timesteps)


def _trained(model, x):
    v = model.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x, train=True)
    _, upd = model.apply(v, x * 1.5 + 0.2, train=True, rngs={"noise": jax.random.key(2)}, mutable=["batch_stats"])
    params = jax.tree_util.tree_map(lambda a: a * 1.2 + 0.05, v["params"])
    return {"params": params, **upd}


def test_folding_follows_dataflow_not_names_and_runners_accept_a_user_model():
    model, x = UserNet(), jax.random.normal(jax.random.key(3), (7, 8, 8, 2))
    v = _trained(model, x)
    pairs = convert.batchnorm_pairs(model, v, x)
    assert {k: p for k, (_, p) in pairs.items()} == {("stem",): ("norm_a",), ("hidden",): ("norm_b",)}
    fm, fv = convert.fold_batchnorm(model, v, x)
    assert fm.fold_bn and "batch_stats" not in fv and set(fv["params"]) == {"stem", "hidden", "out"}
    for T in (1, 5):
        np.testing.assert_allclose(fm.apply(fv, x, timesteps=T), model.apply(v, x, timesteps=T), rtol=1e-4, atol=1e-4)
    y = np.asarray(jnp.argmax(model.apply(v, x, timesteps=4), -1))
    assert evaluate.evaluate(fm, fv, np.asarray(x), y, 4)["accuracy"] == 1.0
    assert evaluate.step_logits(fm, fv, x, 4).shape == (4, 7, 5)
    counts = ops.count_ops(fm, fv, x, 4)
    assert set(counts["layers"]) == {"stem", "hidden", "out"} and counts["sops"] > 0


class AddThenNorm(nn.Module):
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = nn.Dense(4)(x) + nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=not train, name="after_add")(x)
        return nn.Dense(2)(x)


class NoFoldField(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        return nn.Dense(2)(nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x)))


@pytest.mark.parametrize("model,message", [(AddThenNorm(), "batch norm after_add .* cannot be folded"),
                                           (NoFoldField(), "has batch norm but no fold_bn field")])
def test_models_that_cannot_be_folded_say_so(model, message):
    x = jnp.ones((3, 5))
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=message):
        convert.fold_batchnorm(model, v, x)
