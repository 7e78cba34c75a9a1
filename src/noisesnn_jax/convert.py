"""T=1 -> T=N conversion: batch-norm folding, jitted multi-step prediction, firing rates.

Conversion changes no weight: the multi-step network is the same model applied with
``timesteps=T`` (METHOD.md, section 4). Folding batch norm into the preceding layer is an exact
rewrite of inference-mode batch norm, ``y = gamma * (W x + b - mean) / sqrt(var + eps) + beta``::

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

after which the bias is injected as current at every time step.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.models import BN_EPS

Array = jax.Array
Variables = dict[str, Any]


def fold_batchnorm(model: Any, variables: Variables) -> tuple[Any, Variables]:
    """Fold every ``bn{i}`` into its ``conv{i}``/``dense{i}``; returns ``(folded_model, variables)``.

    The folded model has ``fold_bn=True`` (layers with bias, no batch norm) and no
    ``batch_stats``; in inference it computes the same function as the original.
    """
    if not getattr(model, "batch_norm", False) or getattr(model, "fold_bn", True):
        return model, variables
    params = dict(jax.tree_util.tree_map(lambda a: a, variables["params"]))
    stats = variables.get("batch_stats", {})
    folded: dict[str, Any] = {}
    for name, sub in params.items():
        if name.startswith("bn"):
            continue
        for prefix in ("conv", "dense"):
            if name.startswith(prefix) and f"bn{name[len(prefix):]}" in params:
                bn_name = f"bn{name[len(prefix):]}"
                bn, st = params[bn_name], stats[bn_name]
                scale = bn["scale"] * jax.lax.rsqrt(st["var"] + BN_EPS)
                bias = sub.get("bias", jnp.zeros_like(bn["bias"]))
                sub = {"kernel": sub["kernel"] * scale,
                       "bias": (bias - st["mean"]) * scale + bn["bias"]}
                break
        folded[name] = sub
    out = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    out["params"] = folded
    return model.clone(fold_bn=True), out


@functools.partial(jax.jit, static_argnums=(0, 3))
def _predict(model: Any, variables: Variables, images: Array, timesteps: int):
    logits, state = model.apply(variables, images, timesteps=timesteps,
                                mutable=["intermediates"])
    rates = state.get("intermediates", {})
    return logits, rates


def predict(model: Any, variables: Variables, images: Array,
            timesteps: int = 1) -> tuple[Array, dict[str, float]]:
    """Multi-step inference: ``images [B, ...] -> (logits [B, K], {layer: firing rate})``.

    At ``timesteps=1`` the noise is at its mean (the deterministic T=1 network). Jitted once per
    ``(model, timesteps, shape)``.
    """
    logits, rates = _predict(model, variables, jnp.asarray(images), int(timesteps))
    return logits, flatten_rates(rates)


def flatten_rates(tree: Any) -> dict[str, float]:
    """``{"act0": {"neuron": {"firing_rate": r}}} -> {"act0": r}``."""
    flat = {}
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        names = [p.key for p in path if hasattr(p, "key")]
        layer = names[0] if names else "rate"
        flat[layer] = float(value)
    return flat


def evaluate(model: Any, variables: Variables, x: np.ndarray, y: np.ndarray, timesteps: int = 1,
             batch_size: int = 500, sample_noise_key: Array | None = None) -> dict[str, Any]:
    """Accuracy and mean per-layer firing rates over ``(x, y)`` at ``timesteps``.

    With ``sample_noise_key`` (T=1 only) the noise is sampled instead of set to its mean.
    """
    correct, rates_sum, n = 0, {}, len(x)
    for start in range(0, n, batch_size):
        xb = jnp.asarray(x[start:start + batch_size])
        if sample_noise_key is not None:
            key = jax.random.fold_in(sample_noise_key, start)
            logits, rates = _predict_sampled(model, variables, xb, key)
            rates = flatten_rates(rates)
        else:
            logits, rates = predict(model, variables, xb, timesteps)
        correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(y[start:start + batch_size])))
        for k, r in rates.items():
            rates_sum[k] = rates_sum.get(k, 0.0) + r * len(xb)
    return {"accuracy": correct / n, "correct": correct, "total": n,
            "firing_rates": {k: v / n for k, v in rates_sum.items()}}


@functools.partial(jax.jit, static_argnums=(0,))
def _predict_sampled(model: Any, variables: Variables, images: Array, key: Array):
    logits, state = model.apply(variables, images, timesteps=1, sample_noise=True,
                                rngs={"noise": key}, mutable=["intermediates"])
    rates = state.get("intermediates", {})
    return logits, rates
