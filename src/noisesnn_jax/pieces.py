"""How many images one piece of an inference batch holds: cache-sized pieces on a CPU.

A multi-step layer reads its input T times; when a piece's largest activation (``T x images x``
the largest per-image activation of one step, read from the model's trace) fits the cores' L2
cache, those reads come from the cache instead of memory. Images are independent at inference, so
the pieces give the whole batch's result (``evaluate``, ``early_exit`` use them; docs/design.md).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.contract import Array, SpikingModel, Variables

# One core's L2 cache where the machine does not say (see :func:`cache_bytes`).
_DEFAULT_L2_BYTES = 2 * 2 ** 20


@functools.lru_cache(maxsize=1)
def cache_bytes() -> int:
    """The L2 cache of the cores this process runs on, in bytes.

    One core's L2 (Linux sysfs, else 2 MiB) times the usable cores, since XLA splits a CPU
    computation over all of them. Read once per process.

    Returns:
      The cache size in bytes.
    """
    per_core = _DEFAULT_L2_BYTES
    base = "/sys/devices/system/cpu/cpu0/cache"

    def read(entry: str, name: str) -> str:
        with open(os.path.join(base, entry, name)) as f:
            return f.read().strip()

    try:
        for entry in sorted(os.listdir(base)):
            if read(entry, "level") == "2" and read(entry, "type") in ("Unified", "Data"):
                size = read(entry, "size").upper()
                per_core = int(size.rstrip("KMG")) * {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(size[-1:], 1)
                break
    except (OSError, ValueError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return per_core * max(1, cores)


def _sub_jaxprs(values: Any) -> Iterator[Any]:
    """The jaxprs among an equation's parameters (a jit's, a scan's body, a cond's branches)."""
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _sub_jaxprs(v)
        elif hasattr(v, "eqns"):
            yield v
        elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
            yield v.jaxpr


def _value_bytes(jaxpr: Any) -> Iterator[int]:
    """Bytes of every value the equations of ``jaxpr`` (and the jaxprs inside them) produce, in
    program order."""
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                yield math.prod(aval.shape) * aval.dtype.itemsize
        for sub in _sub_jaxprs(eqn.params.values()):
            yield from _value_bytes(sub)


def _largest_activation_bytes(jaxpr: Any) -> int:
    """Bytes of the largest value any equation of ``jaxpr`` (or of the jaxprs inside it) produces."""
    return max(_value_bytes(jaxpr), default=0)


_ROW_BYTES: dict[tuple[Any, ...], int] = {}


def _row_bytes(model: Any, variables: Variables, shape: tuple[int, ...], dtype: Any) -> int:
    """Bytes of the largest activation of one image at one time step, from the model's trace (the
    largest growth of a value from one image to two)."""
    # the images' and the variables' dtypes can change the activations' dtypes, so both are in the key
    key = (model, shape, str(jnp.dtype(dtype)), tuple(str(jnp.result_type(a)) for a in jax.tree.leaves(variables)))
    if key not in _ROW_BYTES:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), variables)
        one, two = (list(_value_bytes(jax.make_jaxpr(lambda v, x: model.apply(v, x, timesteps=1))(
            abstract, jax.ShapeDtypeStruct((n,) + shape, jnp.dtype(dtype))).jaxpr)) for n in (1, 2))
        # Traced at one and two images: a value's growth is what one image adds to it, so values
        # that depend on the variables alone (a bfloat16 kernel cast to float32, say) count for
        # nothing. A model whose program changes with the batch falls back to one image's trace.
        per_image = [b - a for a, b in zip(one, two)] if len(one) == len(two) else one
        if len(_ROW_BYTES) >= 64:
            _ROW_BYTES.clear()
        _ROW_BYTES[key] = max(1, max(per_image, default=0))
    return _ROW_BYTES[key]


def microbatch_size(model: SpikingModel, variables: Variables, images: Array | np.ndarray, timesteps: int,
                    backend: str | None = None) -> int:
    """How many images one piece of a multi-step inference batch holds (the whole batch: no split).

    On a CPU the batch is cut into pieces whose largest activation, ``T x images x`` the largest
    per-image activation of one time step, fits in the cores' L2 cache (:func:`cache_bytes`):
    a multi-step network makes ``T`` passes over each layer's output, which then come from the
    cache instead of memory. Each piece computes exactly what the whole batch does (images are
    independent at inference). A size that divides the batch is preferred when it is at least half
    the largest that fits (equal pieces, no remainder to compile). Accelerators take the batch whole.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables (only their shapes and dtypes are read).
      images: the batch ``[B, ...]`` (only its shape and dtype are read).
      timesteps: ``T``.
      backend: the platform the batch runs on; ``None`` takes ``jax.default_backend()``.

    Returns:
      Images per piece, between 1 and ``B`` (``B`` off the CPU).
    """
    batch = int(images.shape[0])
    if (backend or jax.default_backend()) != "cpu" or batch <= 1:
        return max(1, batch)
    row = _row_bytes(model, variables, tuple(int(d) for d in images.shape[1:]), images.dtype)
    size = max(1, min(batch, cache_bytes() // (row * max(1, int(timesteps)))))
    divisor = max(d for d in range(1, size + 1) if batch % d == 0)
    return divisor if 2 * divisor >= size else size  # equal pieces, no remainder, where close
