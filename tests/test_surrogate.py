"""Surrogate gradients (:mod:`noisesnn_jax.surrogate`): the deterministic spike (``Noise("none")``)
fires on the threshold and back-propagates the named bump."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import Neuron, Noise, noisy_spike


def test_kind_none_uses_named_surrogate():
    x = jnp.array([0.3, 0.5, 0.7])
    for name, alpha in (("triangle", 1.0), ("atan", 2.0), ("sigmoid", 4.0)):
        neuron = Neuron(1.0, surrogate=name, alpha=alpha)
        s = noisy_spike(neuron, Noise("none"), x)
        np.testing.assert_array_equal(np.asarray(s), [0, 1, 1])
        g = np.asarray(jax.grad(lambda x: noisy_spike(neuron, Noise("none"), x).sum())(x))
        u = (np.asarray(x) - 0.5)
        if name == "triangle":
            ref = np.maximum(0, 1 - np.abs(u))
        elif name == "atan":
            ref = (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2)
        else:
            sig = 1 / (1 + np.exp(-alpha * u))
            ref = alpha * sig * (1 - sig)
        np.testing.assert_allclose(g, ref, rtol=1e-5)


def test_rectangle_is_a_half_open_box_of_width_one_over_alpha_in_the_input_dtype():
    """``alpha * 1[|u| < 0.5/alpha]``: the edges ``|u| = 0.5/alpha`` are outside, dtype kept (mutation testing)."""
    from noisesnn_jax.surrogate import SURROGATES

    u = jnp.array([-0.3, -0.25, -0.2, 0.0, 0.2, 0.25, 0.3], jnp.bfloat16)
    g = SURROGATES["rectangle"](u, 2.0)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g, np.float32), [0, 0, 2, 2, 2, 0, 0])


def test_heaviside_gradient_keeps_a_low_precision_dtype():
    """The backward pass casts the bump to the cotangent's dtype: bfloat16 in, bfloat16 gradient out."""
    from noisesnn_jax.surrogate import DEFAULT_ALPHA, SURROGATES, heaviside

    x = jnp.array([-0.3, 0.1, 0.6], jnp.bfloat16)
    for name in SURROGATES:
        g = jax.grad(lambda x: heaviside(x, name, DEFAULT_ALPHA[name]).sum())(x)
        assert g.dtype == jnp.bfloat16, name
