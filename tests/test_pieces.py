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
    assert pieces.microbatch_size(model, v, x[:1], 4) == pieces.microbatch_size(model, v, x[:1], 4, backend="gpu") == 1
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


def test_largest_activation_is_found_inside_nested_programs():
    """The largest value may sit inside a jit, a rematerialized block (a bare jaxpr), a scan's body
    or one branch of a cond; its bytes follow its dtype."""
    from jax import lax

    x = jnp.ones((4,), jnp.float32)

    def big(y, n):  # an intermediate of 4n values, and a small output
        return jnp.tile(y, n)[:1]

    cases = {
        "top level": (lambda x: big(x, 10), 160),
        "jit": (lambda x: jax.jit(lambda y: big(y, 100))(x), 1600),
        "checkpoint": (lambda x: jax.checkpoint(lambda y: big(y, 50))(x), 800),
        "cond, second branch": (lambda x: lax.cond(x[0] > 0, lambda y: big(y, 30), lambda y: big(y, 70), x), 1120),
        "scan body": (lambda x: lax.scan(lambda c, _: (c + big(x, 60), None), jnp.zeros(1), None, length=3)[0], 960),
        "bfloat16": (lambda x: big(x.astype(jnp.bfloat16), 100), 800),
    }
    for name, (fn, expected) in cases.items():
        assert pieces._largest_activation_bytes(jax.make_jaxpr(fn)(x).jaxpr) == expected, name


def test_row_bytes_count_activations_not_variables(monkeypatch):
    """One image's largest activation, cached per model, image shape and dtypes: bfloat16 variables
    that a float32 model casts up add nothing (a kernel's cast is not an activation: it counted
    ten times the largest activation here before); another image size is measured anew."""
    model, shape = MODELS["mlp-nobn"]
    x = jnp.ones((1,) + shape[1:])
    v = model.init({"params": jax.random.key(0)}, x)
    v16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), v)
    row = pieces._row_bytes(model, v, shape[1:], jnp.float32)
    assert row == 4 * max(np.prod(a.shape[1:]) for a in _activations(model, v, x))
    assert pieces._row_bytes(model, v16, shape[1:], jnp.bfloat16) == row
    cnn, (_, h, w, c) = MODELS["resnet-basic"]  # global average pooling: any image size
    vc = cnn.init({"params": jax.random.key(0)}, jnp.ones((1, h, w, c)))
    for size in ((h, w, c), (2 * h, w, c)):  # a convolution's variables fit any image size
        assert pieces._row_bytes(cnn, vc, size, jnp.float32) == 4 * max(
            np.prod(a.shape[1:]) for a in _activations(cnn, vc, jnp.ones((1,) + size)))
    monkeypatch.setattr(pieces, "cache_bytes", lambda: row)  # one image per piece fits
    assert pieces.microbatch_size(model, v, jnp.ones((2,) + shape[1:]), 1) == 1
