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


@pytest.fixture
def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a jax.distributed coordinator)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
