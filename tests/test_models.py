"""Models (:mod:`noisesnn_jax.models`): in both time modes the fast multi-step path equals a naive
step-by-step loop; T=1 evaluation, ReLU twins, bad inputs, the zoo's sizes and mixed precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import MODELS, _trained_like, naive_multistep
from noisesnn_jax import baselines, convert, evaluate
from noisesnn_jax.models import CNN, ResNet


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("timesteps", [1, 5])
def test_fast_multistep_equals_naive_loop(name, timesteps):
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(7), shape) * 2.0
    v = _trained_like(model, x)
    fast = model.apply(v, x, timesteps=timesteps)
    ref = naive_multistep(model, v, x, timesteps)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_multistep_computes_first_layer_once():
    """Stateless layers run once over T*B rows and the first conv once over B: 3 convs, not 3*T."""
    model, shape = MODELS["cnn-avg"]
    x = jnp.ones(shape)
    v = _trained_like(model, x)
    jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x, timesteps=8))(v, x))
    assert jaxpr.count("conv_general_dilated") == 3
    # the first conv sees the batch of 6, the later ones 8*6 rows
    assert "f32[6,12,12,8]" in jaxpr and "f32[48,6,6,8]" in jaxpr


def test_t1_eval_is_deterministic_and_training_samples():
    model, shape = MODELS["cnn-avg"]
    x = jax.random.normal(jax.random.key(9), shape)
    v = _trained_like(model, x)
    a = model.apply(v, x)
    b = model.apply(v, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    s1 = model.apply(v, x, sample_noise=True, rngs={"noise": jax.random.key(1)})
    s2 = model.apply(v, x, sample_noise=True, rngs={"noise": jax.random.key(2)})
    assert not np.allclose(np.asarray(s1), np.asarray(s2))


def test_relu_model_ignores_time_and_shares_structure():
    spiking = CNN(channels=(8, 8), pool_after=(0,), num_classes=3)
    ann = spiking.clone(activation="relu")
    x = jnp.ones((2, 8, 8, 1))
    vs = spiking.init({"params": jax.random.key(0)}, x)
    va = ann.init({"params": jax.random.key(0)}, x)
    assert jax.tree_util.tree_structure(vs) == jax.tree_util.tree_structure(va)
    np.testing.assert_array_equal(np.asarray(ann.apply(va, x, timesteps=4)),
                                  np.asarray(ann.apply(va, x)))


def test_bad_timesteps_and_shapes():
    model, shape = MODELS["cnn-avg"]
    x = jnp.ones(shape)
    v = model.init({"params": jax.random.key(0)}, x)
    with pytest.raises(ValueError, match="timesteps"):
        model.apply(v, x, timesteps=0)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model.apply(v, jnp.ones((2, 12, 12)))


def test_zoo_sizes_and_relu_conversion():
    """The zoo builds at standard sizes (ResNet-20 has 0.27M parameters) and a ReLU ResNet
    converts with one threshold per activation, residual outputs included."""
    from noisesnn_jax import models
    x = jnp.ones((1, 32, 32, 3))
    v = models.resnet20(num_classes=10).init({"params": jax.random.key(0)}, x)
    n = sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))
    assert 0.26e6 < n < 0.28e6
    ann = ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=3, activation="relu")
    xs = np.asarray(jax.random.normal(jax.random.key(1), (4, 8, 8, 2)))
    va = ann.init({"params": jax.random.key(0)}, xs)
    th = baselines.activation_statistics(ann, va, [xs], 99.9)
    assert set(th) == {"act0", "acts0b0_a", "acts0b0_out", "acts1b0_a", "acts1b0_out"}
    snn, sv = baselines.ann_to_snn(ann, va, th, 0.5)
    assert sv["params"]["acts1b0_out"]["neuron"]["threshold"].shape == (8,)
    logits, rates = evaluate.predict(*convert.fold_batchnorm(snn, sv, xs), xs, 4)
    assert logits.shape == (4, 3) and len(rates) == 5


def test_bfloat16_compute_keeps_float32_parameters():
    """Mixed precision: bf16 activations and spikes, float32 parameters, gradients and logits."""
    import functools

    import optax

    from noisesnn_jax.run.state import create_state
    from noisesnn_jax.run.train import train_step
    model = CNN(channels=(8, 8), pool_after=(0,), num_classes=3, dtype=jnp.bfloat16)
    state = create_state(model, optax.adam(1e-3), (8, 8, 1), jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    step = jax.jit(functools.partial(train_step, num_classes=3))
    new, metrics = step(state, x, jnp.array([0, 1, 2, 0]), jax.random.key(2))
    assert np.isfinite(float(metrics["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(new.params))
    assert model.apply({"params": new.params, "batch_stats": new.batch_stats}, x, timesteps=4).dtype == jnp.float32
