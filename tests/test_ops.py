"""Operation counts (:mod:`noisesnn_jax.ops`): connections and synaptic operations, counted by hand."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Noise, ops
from noisesnn_jax.models import MLP


def test_connections_hand_count():
    """A 3x3 'SAME' conv: an input at a corner reaches 4 outputs, at the centre 9; dense: nnz * out."""
    conv = nn.Conv(5, (3, 3), padding="SAME")
    a = np.zeros((1, 3, 3, 1), np.float32)
    a[0, 0, 0, 0] = 1.0
    assert float(ops.connections(conv, jnp.asarray(a))) == 4 * 5
    a[0, 1, 1, 0] = 0.5
    assert float(ops.connections(conv, jnp.asarray(a))) == (4 + 9) * 5
    assert float(ops.connections(conv, jnp.ones((1, 3, 3, 2)))) == (4 * 4 + 4 * 6 + 9) * 2 * 5
    dense = nn.Dense(7)
    assert float(ops.connections(dense, jnp.array([[0.0, 1.0, 2.0, 0.0]]))) == 2 * 7


def test_count_ops_on_tiny_mlp_by_hand():
    """MLP 3 -> 4 spiking -> 2: the first layer is 12 MACs per image, once; the readout costs 2
    accumulates per spike, summed over T."""
    model = MLP(hidden=(4,), num_classes=2, batch_norm=False, noise=Noise("none", mean=0.0))
    x = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    v = model.init({"params": jax.random.key(0)}, x)
    # hidden weights: neuron j receives x0 * w_j, w = 0.25, 0.5, 0.75, 1.25 (exact in binary), no bias
    params = dict(v["params"])
    params["dense0"] = {"kernel": jnp.zeros((3, 4)).at[0].set(jnp.array([0.25, 0.5, 0.75, 1.25])),
                        "bias": jnp.zeros(4)}
    v = {"params": params}
    T = 10
    counts = ops.count_ops(model, v, x, T)
    # image 0: IF counts over 10 steps from v0 = 0: floor(10 * w) capped at 10 -> 2, 5, 7, 10 spikes
    # image 1: no input, no spikes. Per image: (2 + 5 + 7 + 10) * 2 / 2 images.
    assert counts["first_layer_macs"] == 12
    assert counts["layers"]["readout"]["sops"] == pytest.approx((2 + 5 + 7 + 10) * 2 / 2)
    assert counts["ann_macs"] == 12 + 8
    assert counts["snn_energy_uj"] == pytest.approx((4.6 * 12 + 0.9 * 24) * 1e-6)
