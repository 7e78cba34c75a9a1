"""Inference and evaluation (:mod:`noisesnn_jax.evaluate`): firing rates per layer, inference in
cache-sized pieces equal to the whole batch, and the per-step readout behind the accuracy curve."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import MODELS, _trained_like
from noisesnn_jax import evaluate


def test_predict_returns_rates_per_layer():
    model, shape = MODELS["cnn-avg"]
    x = jax.random.normal(jax.random.key(10), shape)
    v = _trained_like(model, x)
    logits, rates = evaluate.predict(model, v, x, 4)
    assert logits.shape == (shape[0], 5)
    assert set(rates) == {"act0", "act1", "act2"}
    assert all(0.0 <= r <= 1.0 for r in rates.values())


@pytest.mark.parametrize("name", ["cnn-avg", "resnet-basic"])
def test_microbatched_inference_equals_the_whole_batch(name):
    """Inference in cache-sized pieces (``lax.map`` over pieces, then the remainder) gives the
    whole batch's logits, and its firing rates are the whole batch's means."""
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(11), (7,) + shape[1:])
    v = _trained_like(model, x)
    whole, whole_rates = evaluate.predict(model, v, x, 4, microbatch=7)
    for piece in (1, 3):  # 7 = 7 x 1, 2 x 3 + 1
        logits, rates = evaluate.predict(model, v, x, 4, microbatch=piece)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(whole), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(logits).argmax(-1), np.asarray(whole).argmax(-1))
        assert rates.keys() == whole_rates.keys()
        np.testing.assert_allclose([rates[k] for k in rates], [whole_rates[k] for k in rates], atol=1e-6)
    np.testing.assert_allclose(np.asarray(evaluate.infer(model, v, x, 4)), np.asarray(whole), atol=1e-5)


@pytest.mark.parametrize("name", ["cnn-avg", "mlp-learned"])
def test_step_logits_prefix_is_the_shorter_run(name):
    """The mean of the first t per-step readouts equals the output of the network run for T=t, and
    the accuracy curve from one long run equals evaluating each T separately."""
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(3), (12,) + shape[1:]) * 2.0
    variables = _trained_like(model, x[:6])
    steps = evaluate.step_logits(model, variables, x, 6)
    assert steps.shape == (6, 12, model.num_classes)
    apply = jax.jit(model.apply, static_argnames="timesteps")  # one compile per T, not per primitive
    for t in (1, 2, 3, 6):
        np.testing.assert_allclose(jnp.mean(steps[:t], 0), apply(variables, x, timesteps=t), rtol=1e-5, atol=1e-5)

    class Tiny:  # the dataset interface accuracy_curve reads
        num_test = 12
        y = np.array(jnp.argmax(apply(variables, x, timesteps=3), -1))
        y[::3] = (y[::3] + 1) % model.num_classes  # some wrong at T=3

        def test_examples(self, idx):
            return np.asarray(x)[idx], self.y[idx]

    ds = Tiny()
    curve = evaluate.accuracy_curve(model, variables, ds, (4, 1, 3, 6), batch_size=5)
    expected = [evaluate.evaluate(model, variables, np.asarray(x), ds.y, T, batch_size=5)["accuracy"] for T in (4, 1, 3, 6)]
    assert curve == expected
