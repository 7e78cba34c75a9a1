"""Batch-norm folding (:mod:`noisesnn_jax.convert`): exact on the zoo in both time modes, following the
dataflow (not the names) of a user's model, and saying why a model cannot be folded."""

from __future__ import annotations

import re

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


class NormOptions(nn.Module):
    """Batch norms without a scale, without a bias, with a large epsilon on small variances; with
    ``keep_norm`` a fold_bn field that folds nothing."""

    fold_bn: bool = False
    keep_norm: bool = False

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        mode = dict(timesteps=timesteps, train=train, sample_noise=sample_noise)
        norm = not self.fold_bn or self.keep_norm
        x = nn.Dense(6, use_bias=not norm or self.keep_norm, name="a")(x)
        if norm:
            x = nn.BatchNorm(use_running_average=not train, use_scale=False, epsilon=0.05, name="bn_a")(x)
        x = SpikingNeuron()(x, constant=True, **mode)
        x = nn.Dense(6, use_bias=True, name="b")(x)  # a bias of its own before the batch norm
        if norm:
            x = nn.BatchNorm(use_running_average=not train, use_bias=False, epsilon=0.05, name="bn_b")(x)
        x = SpikingNeuron()(x, **mode)
        return average_readout(self, nn.Dense(3, name="out")(x), timesteps)


def test_folding_handles_batch_norm_without_scale_or_bias_and_uses_epsilon():
    """Small running variances (about 1e-2) next to epsilon = 0.05: folding without epsilon, or
    with a scale or bias a batch norm does not have, changes the logits."""
    model, x = NormOptions(), 0.1 * jax.random.normal(jax.random.key(4), (9, 5))
    v = _trained(model, x)
    v["batch_stats"] = jax.tree_util.tree_map(lambda a: a, v["batch_stats"])
    for i, name in enumerate(("bn_a", "bn_b")):  # running statistics of small activations
        key = jax.random.key(10 + i)
        v["batch_stats"][name] = {"mean": 0.1 * jax.random.normal(key, (6,)),
                                  "var": 0.01 + 0.02 * jax.random.uniform(jax.random.fold_in(key, 1), (6,))}
    fm, fv = convert.fold_batchnorm(model, v, x)
    assert set(fv["params"]) == {"a", "b", "out"}
    for T in (1, 4):
        np.testing.assert_allclose(fm.apply(fv, x, timesteps=T), model.apply(v, x, timesteps=T), rtol=1e-4, atol=1e-4)
    bn = v["batch_stats"]["bn_b"]  # the layer's own bias is folded through the batch norm
    want = (v["params"]["b"]["bias"] - bn["mean"]) * v["params"]["bn_b"]["scale"] / np.sqrt(bn["var"] + 0.05)
    np.testing.assert_allclose(fv["params"]["b"]["bias"], want, rtol=1e-5)


def test_a_folded_model_or_one_without_batch_statistics_is_returned_as_it_is():
    model, x = NormOptions(), jnp.ones((2, 5))
    v = _trained(model, x)
    fm, fv = convert.fold_batchnorm(model, v, x)
    assert convert.fold_batchnorm(fm, fv, x) == (fm, fv)
    got = convert.fold_batchnorm(fm, v, x)  # folded already, whatever variables come with it
    assert got[0] is fm and got[1] is v
    plain = {"params": v["params"]}
    got = convert.fold_batchnorm(model, plain, x)
    assert got[0] is model and got[1] is plain


class HalfFold(nn.Module):
    """A fold_bn field that does half the job: ``keep`` a batch norm (with neither scale nor bias,
    so the parameters look folded but the statistics stay), or ``no_bias`` (the batch norm goes
    but the layer gets no bias)."""

    fold_bn: bool = False
    fault: str = "keep"

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        bias = self.fold_bn and self.fault != "no_bias"
        x = nn.Dense(4, use_bias=bias, name="a")(x)
        if not self.fold_bn or self.fault == "keep":
            x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False, name="bn")(x)
        return nn.Dense(2, name="out")(x)


@pytest.mark.parametrize("model,name", [(NormOptions(keep_norm=True), "NormOptions"),
                                        (HalfFold(fault="keep"), "HalfFold"), (HalfFold(fault="no_bias"), "HalfFold")])
def test_a_fold_field_that_does_not_fold_is_refused(model, name):
    """Either half is enough to refuse: parameters other than the folded ones, or batch statistics left."""
    x = jnp.ones((2, 5))
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=rf"{name}\(fold_bn=True\) does not have the folded parameters"):
        convert.fold_batchnorm(model, v, x)


class NormOnInput(nn.Module):
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        return nn.Dense(2)(nn.BatchNorm(use_running_average=not train, name="on_input")(x))


def test_a_batch_norm_on_the_input_cannot_be_folded():
    x = jnp.ones((3, 5))
    v = NormOnInput().init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"batch norm on_input of NormOnInput does not follow a conv or dense"):
        convert.fold_batchnorm(NormOnInput(), v, x)


def test_only_the_shape_and_dtype_of_the_example_are_used():
    model, x = NormOptions(), jax.random.normal(jax.random.key(5), (4, 5))
    v = _trained(model, x)
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    assert {k: p for k, (_, p) in convert.batchnorm_pairs(model, v, spec).items()} == {("a",): ("bn_a",),
                                                                                       ("b",): ("bn_b",)}
    fm, fv = convert.fold_batchnorm(model, v, spec)
    want = convert.fold_batchnorm(model, v, x)[1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, fv, want)


class TwoBlocksAddThenNorm(nn.Module):
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        for _ in range(2):
            x = AddThenNorm()(x, train=train)
        return x


def test_every_batch_norm_that_cannot_be_folded_is_named_by_its_path():
    x = jnp.ones((3, 4))
    v = TwoBlocksAddThenNorm().init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=re.escape(
            "batch norm AddThenNorm_0/after_add, AddThenNorm_1/after_add of TwoBlocksAddThenNorm does not follow a "
            "conv or dense layer directly, so it cannot be folded; evaluate the model unfolded")):
        convert.fold_batchnorm(TwoBlocksAddThenNorm(), v, x)
