"""Shapes that cannot be mistaken: whatever the batch B, the number of steps T and the inference
piece size (B == T == piece included), inference either equals the naive step-by-step loop's
``[B, K]`` logits or raises the documented error; a model with a planted mistake never returns an
accuracy (property-based, ``hypothesis``)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _helpers import _trained_like, naive_multistep  # noqa: E402
from noisesnn_jax import Neuron, Noise, evaluate  # noqa: E402
from noisesnn_jax.layers import SpikingNeuron, average_readout, flatten_features  # noqa: E402
from noisesnn_jax.models import CNN, MLP, ResNet  # noqa: E402

MODELS = {
    "mlp-if-learned": (MLP(hidden=(12,), num_classes=4, learn_threshold=True, learn_std=True), (6,)),
    "cnn-lif": (CNN(channels=(4, 4), pool_after=(0,), num_classes=3, neuron=Neuron(1.0, tau=2.0)), (6, 6, 1)),
    "resnet-if": (ResNet(stage_sizes=(1,), widths=(4,), num_classes=3, noise=Noise("uniform")), (4, 4, 1)),
}
_VARS: dict[str, dict] = {}


def _variables(name):
    if name not in _VARS:
        model, shape = MODELS[name]
        v = _trained_like(model, jax.random.normal(jax.random.key(1), (4,) + shape))
        if "learned" in name:  # thresholds away from 1, so a layer that ignores them would differ
            v = jax.tree_util.tree_map_with_path(
                lambda p, a: a * jnp.linspace(0.6, 1.4, a.shape[-1]) if "threshold" in jax.tree_util.keystr(p) else a,
                v)
        _VARS[name] = v
    return _VARS[name]


@settings(max_examples=12, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(MODELS)), batch=st.integers(1, 9), timesteps=st.integers(1, 9),
       piece=st.integers(1, 9), tie=st.booleans())
@example(name="cnn-lif", batch=8, timesteps=8, piece=8, tie=True)  # the case that used to pass silently
def test_inference_equals_the_naive_loop_for_every_batch_t_and_piece(name, batch, timesteps, piece, tie):
    if tie:  # the coincidence that used to pass silently: batch == T == piece
        batch = piece = timesteps
    model, shape = MODELS[name]
    variables = _variables(name)
    x = 2.0 * jax.random.normal(jax.random.key(batch * 31 + timesteps), (batch,) + shape)
    logits, _ = evaluate.predict(model, variables, x, timesteps, microbatch=min(piece, batch))
    assert logits.shape == (batch, model.num_classes)
    np.testing.assert_allclose(logits, naive_multistep(model, variables, x, timesteps), rtol=2e-5, atol=2e-5)


class WrongAxis(nn.Module):
    """Averages the readout over the batch instead of time: ``[T, K]`` logits."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        h = SpikingNeuron()(nn.Dense(8)(flatten_features(x)), timesteps=timesteps, constant=True, train=train,
                            sample_noise=sample_noise)
        out = nn.Dense(10)(h)
        return out.mean(axis=1) if timesteps > 1 else out


class ForgotConstant(nn.Module):
    """The first spiking layer lacks ``constant=True``: its ``[B, ...]`` input is read as ``[T, ...]``."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        h = SpikingNeuron()(nn.Dense(8)(flatten_features(x)), timesteps=timesteps, train=train,
                            sample_noise=sample_noise)
        return average_readout(self, nn.Dense(10)(h), timesteps)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(model=st.sampled_from([WrongAxis(), ForgotConstant()]), timesteps=st.integers(2, 9),
       batch=st.integers(1, 12), tie=st.booleans())
@example(model=WrongAxis(), timesteps=8, batch=8, tie=True)
@example(model=ForgotConstant(), timesteps=8, batch=8, tie=True)
def test_a_planted_mistake_never_returns_an_accuracy(model, timesteps, batch, tie):
    if tie:
        batch = timesteps
    x = np.asarray(jax.random.normal(jax.random.key(batch), (batch, 5, 5, 1)))
    y = np.zeros(batch, np.int64)
    v = model.init(jax.random.key(0), x[:1])
    with pytest.raises(ValueError, match=rf"for a batch of {batch}|you passed {batch} images|time-major") as err:
        evaluate.evaluate(model, v, x, y, timesteps=timesteps)
    assert "constant=True" in str(err.value)  # the message names the fix
    for run in (lambda: evaluate.predict(model, v, x, timesteps, microbatch=min(batch, timesteps)),
                lambda: evaluate.step_logits(model, v, x, timesteps)):
        with pytest.raises(ValueError, match="constant=True"):
            run()


@pytest.mark.parametrize("bad, match", [
    (dict(timesteps=0), "timesteps=0 is invalid"),
    (dict(timesteps=4.0), "timesteps=4.0 is invalid"),
    (dict(timesteps=True), "timesteps=True is invalid"),
    # the key is made in the test: a JAX array made at collection would start the XLA backend in
    # mutmut's fork server (make mutation), and its forked children would deadlock
    (dict(timesteps=8, sample_noise_key="key(0)"), "T=1 network only"),
])
def test_every_entry_point_rejects_the_same_mistakes(bad, match):
    bad = {k: jax.random.key(0) if k == "sample_noise_key" else v for k, v in bad.items()}
    model = CNN(channels=(4,), pool_after=(0,), num_classes=3)
    x, y = np.ones((6, 6, 6, 1), np.float32), np.zeros(6, np.int64)
    v = model.init(jax.random.key(0), x[:1])
    with pytest.raises(ValueError, match=match):
        evaluate.evaluate(model, v, x, y, **bad)
    if "sample_noise_key" not in bad:
        from noisesnn_jax import ops
        for run in (lambda: evaluate.predict(model, v, x, bad["timesteps"]),
                    lambda: evaluate.step_logits(model, v, x, bad["timesteps"]),
                    lambda: ops.count_ops(model, v, x, bad["timesteps"])):
            with pytest.raises(ValueError, match=match):
                run()


def test_images_without_a_channel_axis_and_bad_inputs_name_the_fix():
    model = CNN(channels=(4,), pool_after=(0,), num_classes=3)
    x = np.ones((6, 6, 6, 1), np.float32)
    v = model.init(jax.random.key(0), x[:1])
    with pytest.raises(ValueError, match=r"shape \(6, 6, 6\).*x\[\.\.\., None\]"):
        evaluate.evaluate(model, v, x[..., 0], np.zeros(6), timesteps=4)
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate.predict(model, v, np.where(np.arange(6)[:, None, None, None] == 2, np.nan, x), 4)
    with pytest.raises(ValueError, match="floating-point"):
        evaluate.predict(model, v, x.astype(np.int32), 4)
    mlp = MLP(hidden=(4,), num_classes=2)
    with pytest.raises(ValueError, match="sample_noise=True applies to the T=1 network only"):
        mlp.apply(mlp.init(jax.random.key(0), x[:2, 0, :, 0]), x[:2, 0, :, 0], timesteps=4, sample_noise=True)


def test_a_noise_key_without_train_warns_once():
    import noisesnn_jax.layers as layers
    layers._WARNED.discard("noise_key")
    model = MLP(hidden=(4,), num_classes=2)
    x = jnp.ones((3, 5))
    v = model.init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match="train=True"):
        model.apply(v, x, rngs={"noise": jax.random.key(1)}, mutable=["batch_stats"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        model.apply(v, x, rngs={"noise": jax.random.key(1)}, mutable=["batch_stats"])
        model.apply(v, x, train=True, rngs={"noise": jax.random.key(1)}, mutable=["batch_stats"])
