"""Layers (:mod:`noisesnn_jax.layers`): the QCFS activation and its exact conversion at T = L, and the
activation switch's parameters named alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import Neuron, neurons
from noisesnn_jax.layers import QCFS, Activation


def test_qcfs_activation_and_exact_conversion_at_t_equals_l():
    """QCFS h(x) = lam*clip(floor(xL/lam + 1/2)/L, 0, 1); an IF neuron with threshold lam started at
    lam/2 fires exactly h(x)/lam * T times in T = L steps for constant input."""
    L, lam = 4, 2.0
    x = jnp.linspace(-1, 3, 41) + 0.01
    q = QCFS(levels=L, init_threshold=lam)
    v = q.init(jax.random.key(0), x[:, None])
    h = q.apply(v, x[:, None])[:, 0]
    ref = lam * np.clip(np.floor(np.asarray(x) * L / lam + 0.5) / L, 0, 1)
    np.testing.assert_allclose(np.asarray(h), ref, atol=1e-6)
    spikes, _ = neurons.run_constant(Neuron(lam, v_init=lam / 2), x, L)
    np.testing.assert_allclose(np.asarray(spikes.mean(0)) * lam, ref, atol=1e-6)
    g = jax.grad(lambda lam_: q.apply({"params": {"threshold": lam_}}, x[:, None]).sum())(jnp.array([lam]))
    assert np.isfinite(np.asarray(g)).all()


def test_activation_switch_names_param_alike():
    """The spiking layer's learned threshold and QCFS's clip live under the same name."""
    x = jnp.ones((2, 3))
    a = Activation("qcfs").init(jax.random.key(0), x)
    s = Activation("spike", learn_threshold=True).init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(s)
