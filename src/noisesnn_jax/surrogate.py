"""Heaviside step with a surrogate gradient (the backward pass of a deterministic spike).

The forward pass is the exact step ``H(u) = 1[u >= 0]``; the backward pass replaces the Dirac
delta by a named, unit-area bump ``g(u)`` of width set by ``alpha``. ``u`` is the distance of the
charged potential above the threshold, in units of the threshold (``u = (m - theta) / theta``), so
the surrogates are scale-free.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array


def _triangle(u: Array, alpha: float) -> Array:
    """Triangle of half-width ``1/alpha`` and unit area: ``alpha * max(0, 1 - alpha*|u|)``."""
    return alpha * jnp.maximum(0.0, 1.0 - alpha * jnp.abs(u))


def _atan(u: Array, alpha: float) -> Array:
    """Derivative of ``atan(pi/2 * alpha * u) / pi + 1/2`` (SpikingJelly's ATan)."""
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * u) ** 2)


def _sigmoid(u: Array, alpha: float) -> Array:
    """Derivative of ``sigmoid(alpha * u)``: ``alpha * s * (1 - s)``."""
    s = jax.nn.sigmoid(alpha * u)
    return alpha * s * (1.0 - s)


def _rectangle(u: Array, alpha: float) -> Array:
    """Box of width ``1/alpha`` and unit area (straight-through within the box)."""
    return alpha * (jnp.abs(u) < 0.5 / alpha).astype(u.dtype)


#: The surrogate gradients ``g(u, alpha)`` by name, each of unit area.
SURROGATES: dict[str, Callable[[Array, float], Array]] = {
    "triangle": _triangle,
    "atan": _atan,
    "sigmoid": _sigmoid,
    "rectangle": _rectangle,
}

#: Each surrogate's default sharpness ``alpha``.
DEFAULT_ALPHA: dict[str, float] = {"triangle": 1.0, "atan": 2.0, "sigmoid": 4.0, "rectangle": 1.0}


def check_surrogate(name: str) -> None:
    """Check that ``name`` is a known surrogate.

    Args:
      name: a key of :data:`SURROGATES` (``triangle``, ``atan``, ``sigmoid``, ``rectangle``).

    Raises:
      ValueError: ``name`` is not known (the message names the allowed surrogates).
    """
    if name not in SURROGATES:
        raise ValueError(f"surrogate={name!r} is not known; choose one of {sorted(SURROGATES)}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def heaviside(u: Array, surrogate: str = "triangle", alpha: float = 1.0) -> Array:
    """Spike ``H(u) = 1[u >= 0]`` in ``u``'s dtype; gradient ``surrogate(u, alpha)``.

    Args:
      u: distance above the threshold in units of the threshold, any shape.
      surrogate: name of the backward pass, a key of :data:`SURROGATES` (not differentiated).
      alpha: surrogate sharpness (not differentiated).

    Returns:
      0/1 spikes of ``u``'s shape and dtype.
    """
    return (u >= 0).astype(u.dtype)


def _heaviside_fwd(u: Array, surrogate: str, alpha: float) -> tuple[Array, Array]:
    return heaviside(u, surrogate, alpha), u


def _heaviside_bwd(surrogate: str, alpha: float, u: Array, g: Array) -> tuple[Array]:
    return (g * SURROGATES[surrogate](u, alpha).astype(g.dtype),)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)
