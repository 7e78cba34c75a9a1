"""Two time modes: the fast multi-step path equals a naive step-by-step loop; BN folding is exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Neuron, Noise, baselines, convert, evaluate, pieces
from noisesnn_jax.layers import STATE_COLLECTION
from noisesnn_jax.models import CNN, MLP, VGG, ResNet


def _trained_like(model, x, key=0):
    """Variables with non-trivial batch-norm statistics (a few T=1 training-mode passes)."""
    v = model.init({"params": jax.random.key(key), "noise": jax.random.key(key + 1)}, x, train=True)
    for i in range(3):
        _, upd = model.apply(v, x * (1 + 0.1 * i), train=True, rngs={"noise": jax.random.key(i)},
                             mutable=["batch_stats"])
        v = {**v, **upd}
    # push BN scales/biases away from their init so folding is exercised
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 1.3 + 0.05 if any(getattr(k, "key", "").startswith("bn") for k in p) else a,
        v["params"])
    return {**v, "params": params}


def naive_multistep(model, variables, x, timesteps):
    """Reference: a Python loop over t calling the whole network one step at a time. The potentials
    start from the given variables' own initial value (``noise.mean * theta`` with the trained
    thresholds): the first call creates them, then each call advances them one step."""
    variables = {k: v for k, v in variables.items() if k != STATE_COLLECTION}
    state = {}
    logits = []
    for _ in range(timesteps):
        out, upd = model.apply({**variables, **({STATE_COLLECTION: state} if state else {})}, x, stateful=True,
                               mutable=[STATE_COLLECTION])
        state = upd[STATE_COLLECTION]
        logits.append(out)
    return jnp.mean(jnp.stack(logits), axis=0)


MODELS = {
    "cnn-avg": (CNN(channels=(8, 8, 16), pool_after=(0, 1), pool="avg", num_classes=5), (6, 12, 12, 2)),
    "cnn-max-lif-zero": (CNN(channels=(8, 16), pool_after=(0,), pool="max", num_classes=5,
                             neuron=Neuron(1.0, tau=2.0, reset="zero"), noise=Noise("uniform")),
                         (6, 8, 8, 1)),
    "mlp-learned": (MLP(hidden=(32, 16), num_classes=4, learn_threshold=True, learn_std=True,
                        noise=Noise("logistic", mean=0.3)), (7, 20)),
    "mlp-nobn": (MLP(hidden=(24,), num_classes=3, batch_norm=False), (5, 10)),
    "resnet-basic": (ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=3), (3, 8, 8, 2)),
    "resnet-bottleneck-imagenet": (ResNet(stage_sizes=(1, 1), widths=(2, 4), bottleneck=True, stem="imagenet",
                                          num_classes=3), (2, 16, 16, 3)),
    "vgg-tiny": (VGG(stages=((4,), (8, 8)), hidden=8, num_classes=3), (3, 8, 8, 1)),
}


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


def test_microbatch_size_fills_the_cache(monkeypatch):
    """On a CPU a piece holds ``cache / (T x largest per-image activation)`` images; elsewhere the
    whole batch."""
    model, shape = MODELS["cnn-avg"]
    x = jnp.ones((64,) + shape[1:])
    v = model.init({"params": jax.random.key(0)}, x[:1])
    row = pieces._row_bytes(model, v, shape[1:], x.dtype)
    assert row == 4 * max(np.prod(a.shape[1:]) for a in _activations(model, v, x[:1]))
    monkeypatch.setattr(pieces, "cache_bytes", lambda: 8 * row)
    assert pieces.microbatch_size(model, v, x, 4) == 2
    assert pieces.microbatch_size(model, v, x, 1) == 8
    assert pieces.microbatch_size(model, v, x, 16) == 1
    assert pieces.microbatch_size(model, v, x, 4, backend="gpu") == 64
    monkeypatch.setattr(pieces, "cache_bytes", lambda: 10 * row)  # fits 10 at T=1: 8 divides 64
    assert pieces.microbatch_size(model, v, x, 1) == 8
    assert pieces.microbatch_size(model, v, x[:60], 1) == 10
    assert pieces.microbatch_size(model, v, x[:61], 1) == 10  # 61 is prime: 6 pieces of 10 + 1
    monkeypatch.setattr(pieces, "cache_bytes", lambda: 10 ** 12)
    assert pieces.microbatch_size(model, v, x, 4) == 64


def _activations(model, v, x):
    """Every intermediate value of one T=1 inference call (the conv, dense and pooling outputs)."""
    _, state = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    return [a for a in jax.tree_util.tree_leaves(state["intermediates"]) if a.ndim >= 2]


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


@pytest.mark.parametrize("name", ["cnn-avg", "mlp-learned"])
def test_step_logits_prefix_is_the_shorter_run(name):
    """The mean of the first t per-step readouts equals the output of the network run for T=t, and
    the accuracy curve from one long run equals evaluating each T separately."""
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(3), (12,) + shape[1:]) * 2.0
    variables = _trained_like(model, x[:6])
    steps = evaluate.step_logits(model, variables, x, 6)
    assert steps.shape == (6, 12, model.num_classes)
    for t in (1, 2, 3, 6):
        direct = model.apply(variables, x, timesteps=t) if t > 1 else model.apply(variables, x, timesteps=1)
        np.testing.assert_allclose(jnp.mean(steps[:t], 0), direct, rtol=1e-5, atol=1e-5)

    class Tiny:  # the dataset interface accuracy_curve reads
        num_test = 12
        y = np.array(jnp.argmax(model.apply(variables, x, timesteps=3), -1))
        y[::3] = (y[::3] + 1) % model.num_classes  # some wrong at T=3

        def test_examples(self, idx):
            return np.asarray(x)[idx], self.y[idx]

    ds = Tiny()
    curve = evaluate.accuracy_curve(model, variables, ds, (4, 1, 3, 6), batch_size=5)
    expected = [evaluate.evaluate(model, variables, np.asarray(x), ds.y, T, batch_size=5)["accuracy"] for T in (4, 1, 3, 6)]
    assert curve == expected


def test_every_zoo_name_builds_from_a_config():
    """``config.model.name`` picks an entry of one table (``run.state.MODEL_OPTIONS``), the table the
    config's validation accepts; each model gets its own fields from ``config.model``, and an
    unknown name is one ConfigError that lists the choices."""
    from noisesnn_jax import models
    from noisesnn_jax.errors import ConfigError
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.state import MODEL_OPTIONS, build_model

    assert set(MODEL_OPTIONS) == set(models.MODELS)
    c = config_lib.get_config()
    c.model.pool, c.model.stem, c.model.hidden = "max", "imagenet", (12,)
    for name in MODEL_OPTIONS:
        c.model.name = name
        model = build_model(config_lib.validate(c), 7)
        assert model.num_classes == 7
        if name == "mlp":
            assert isinstance(model, MLP) and tuple(model.hidden) == (12,)
        elif name == "cnn":
            assert isinstance(model, CNN) and tuple(model.channels) == c.model.channels and model.pool == "max"
        elif name.startswith("vgg"):
            assert isinstance(model, VGG) and model.pool == "max"
        else:
            assert isinstance(model, ResNet) and model.stem == "imagenet"
    c.model.name = "resnet19"
    with pytest.raises(ConfigError, match="config.model.name='resnet19'.*resnet50"):
        config_lib.validate(c)
    with pytest.raises(ConfigError, match="config.model.name='resnet19'.*resnet50"):
        build_model(c, 7)
