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
