"""Shared fixtures: small configs that train in seconds on the embedded digits data."""

from __future__ import annotations

import os

import pytest

# Two pytest workers on two cores: one thread each keeps them from fighting over the cores.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


@pytest.fixture
def tiny_config():
    """An MLP on digits, 2 epochs: trains in a few seconds."""
    from noisesnn_jax import config as config_lib

    c = config_lib.get_config()
    c.dataset.name = "digits"
    c.model.name = "mlp"
    c.model.hidden = (32,)
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.eval.timesteps = (1, 4)
    return c
