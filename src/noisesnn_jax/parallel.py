"""Data parallelism over a ``data`` mesh axis: every device of every host (``jax.jit`` + shardings).

Parameters and optimizer state are replicated, the batch is sharded along its first axis, and
the train step is the same pure function as on one device: XLA inserts the gradient and
batch-norm all-reduces, so batch-norm statistics are over the global batch. The hash noise
sampler draws from the element's global index, so a sharded step sees the same noise as the
single-device step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh whose one axis is named ``data``.

    Args:
      devices: the devices; ``None`` takes all devices of all processes (``jax.devices()``).

    Returns:
      The mesh.
    """
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device.

    Args:
      mesh: the data mesh (:func:`make_mesh`).

    Returns:
      The replicated sharding.
    """
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the ``data`` axis.

    Args:
      mesh: the data mesh (:func:`make_mesh`).

    Returns:
      The batch sharding.
    """
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (a no-op for leaves already there).

    A leaf on this process's devices only (a fresh or restored state) goes through the host, so
    that every process contributes its own copy: JAX does not move device arrays across hosts.

    Args:
      mesh: the data mesh.
      tree: any pytree of arrays (a train state, variables).

    Returns:
      The same pytree with every leaf replicated over ``mesh``.
    """
    sharding = replicated(mesh)

    def put(leaf):
        if isinstance(leaf, jax.Array):
            if leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                return leaf
            if leaf.is_fully_addressable:
                leaf = np.asarray(leaf)
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(put, tree)


def process_slice(global_batch_size: int) -> slice:
    """The rows of a global batch that this process loads (contiguous, equal shares).

    Args:
      global_batch_size: the batch size over all processes.

    Returns:
      This process's slice of the global batch's rows.

    Raises:
      ValueError: the batch size is not divisible by the number of processes.
    """
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"batch size {global_batch_size} is not divisible by {n} processes")
    per = global_batch_size // n
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def global_batch(mesh: Mesh, local: np.ndarray) -> jax.Array:
    """Stitch each process's rows into one global array sharded over ``data``.

    Args:
      mesh: the data mesh.
      local: this process's rows ``[B / processes, ...]`` (:func:`process_slice`).

    Returns:
      The global batch ``[B, ...]``, sharded along its first axis.
    """
    return jax.make_array_from_process_local_data(batch_sharded(mesh), np.asarray(local))


def shard_train_step(mesh: Mesh, step: Callable, donate: bool = True) -> Callable:
    """``jit`` a ``step(state, images, labels, key) -> (state, metrics)`` for the mesh.

    Args:
      mesh: the data mesh.
      step: the train step; ``images`` and ``labels`` are sharded over ``data``, the state, the
        key and both outputs replicated.
      donate: donate the input state's buffers to the output state.

    Returns:
      The jitted step.
    """
    repl, data = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl, data, data, repl), out_shardings=(repl, repl),
                   donate_argnums=(0,) if donate else ())


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    """Check that the global batch splits evenly over the mesh's devices.

    Args:
      batch_size: the global batch size.
      mesh: the data mesh.

    Raises:
      ValueError: ``batch_size`` is not a multiple of the number of devices.
    """
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh; "
                         f"use a multiple of {n} (--config.train.batch_size)")
