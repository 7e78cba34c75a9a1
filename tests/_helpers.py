"""Helpers that several test files share (not a test module: pytest collects ``test_*.py`` only):
models with trained-like variables and the naive step-by-step reference (tests/test_models.py,
test_convert.py, test_evaluate.py, test_pieces.py, test_shapes_property.py), perturbed variables for
the exports (test_nir.py, test_export.py), and the tiny command-line run (test_train.py, test_cli.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from noisesnn_jax import Neuron, Noise
from noisesnn_jax.layers import STATE_COLLECTION
from noisesnn_jax.models import CNN, MLP, VGG, ResNet


def _trained_like(model, x, key=0):
    """Variables with non-trivial batch-norm statistics (a few T=1 training-mode passes)."""
    # compiled whole (op by op, each primitive of each new shape compiles on its own)
    v = jax.jit(functools.partial(model.init, train=True))({"params": jax.random.key(key),
                                                             "noise": jax.random.key(key + 1)}, x)
    step = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    for i in range(3):
        _, upd = step(v, x * (1 + 0.1 * i), rngs={"noise": jax.random.key(i)})
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
        out, state = _one_step(model, {**variables, **({STATE_COLLECTION: state} if state else {})}, x)
        logits.append(out)
    return jnp.mean(jnp.stack(logits), axis=0)


@functools.partial(jax.jit, static_argnums=0)
def _one_step(model, variables, x):
    """One step of the whole network, compiled as one program (op by op, every new shape would
    compile each primitive on its own): the same arithmetic, one compile per shape."""
    out, upd = model.apply(variables, x, stateful=True, mutable=[STATE_COLLECTION])
    return out, upd[STATE_COLLECTION]


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


def trained_like(model, x, seed=0, thresholds=False):
    """Variables with batch statistics and (optionally) learned thresholds away from their
    initial values, so that folding and the spike amplitude matter."""
    v = {k: c for k, c in jax.jit(model.init)(jax.random.key(seed), x).items() if k in ("params", "batch_stats")}
    return jax.jit(_perturb, static_argnums=2)(v, jax.random.split(jax.random.key(seed + 1), 1000), thresholds)


def _perturb(v, keys, thresholds):
    leaf = iter(range(len(keys)))  # one key per leaf, in order

    def perturb(path, a):
        name = path[-1].key
        k = keys[next(leaf)]
        if name == "mean":
            return 0.3 * jax.random.normal(k, a.shape)
        if name == "var":
            return jax.random.uniform(k, a.shape, minval=0.3, maxval=2.0)
        if name == "scale":
            return jax.random.uniform(k, a.shape, minval=0.6, maxval=1.6)
        if name == "threshold":
            return jax.random.uniform(k, a.shape, minval=0.5, maxval=1.5) if thresholds else a
        return a

    return jax.tree_util.tree_map_with_path(perturb, v)


TINY = ["--config.dataset.name=digits", "--config.model.name=mlp", "--config.model.hidden=32",
        "--config.train.epochs=1", "--config.train.batch_size=128"]


def load_script(relpath: str, name: str):
    """A script of the repository (``benchmarks/scaling.py``) imported as the module ``name``,
    registered in ``sys.modules`` (dataclasses look their module up while a class is built)."""
    import importlib.util
    import os
    import sys

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), relpath)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
