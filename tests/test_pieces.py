"""Inference pieces (:mod:`noisesnn_jax.pieces`): on a CPU a piece's size fills the cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from _helpers import MODELS
from noisesnn_jax import pieces


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
    assert pieces.microbatch_size(model, v, x[:25], 1) == 5  # a divisor of exactly half the fit counts
    assert pieces.microbatch_size(model, v, x[:44], 1) == 10  # 4 divides 44 but is under half of 10
    monkeypatch.setattr(pieces, "cache_bytes", lambda: 10 ** 12)
    assert pieces.microbatch_size(model, v, x, 4) == 64


def _activations(model, v, x):
    """Every intermediate value of one T=1 inference call (the conv, dense and pooling outputs)."""
    _, state = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    return [a for a in jax.tree_util.tree_leaves(state["intermediates"]) if a.ndim >= 2]
