"""Integrate-and-fire neuron dynamics as pure functions (no Flax).

For time steps ``t = 1..T`` and input current ``x_t`` (docs/method.md, section 1)::

    charge:  m_t = v_{t-1} + x_t                     (IF, tau=None)
             m_t = v_{t-1} + (x_t - v_{t-1}) / tau   (LIF, leaks toward 0)
    fire:    s_t = 1[m_t >= theta]
    reset:   v_t = m_t - theta * s_t                 ("subtract", soft reset)
             v_t = m_t * (1 - s_t)                   ("zero", hard reset)
    start:   v_0 = v_init

Spikes are 0/1 in the input's floating dtype. The fire step is differentiable through a named
surrogate gradient (:mod:`noisesnn_jax.surrogate`), so :func:`run` supports backpropagation
through time.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array
from noisesnn_jax.surrogate import DEFAULT_ALPHA, check_surrogate, heaviside

RESETS = ("subtract", "zero")
# Scans of at most this many steps are unrolled: XLA then fuses consecutive steps' element-wise
# work (demo CNN, batch 64, CPU: T=4 inference 80 -> 42 ms, T=8 134 -> 107 ms; T=16 unrolled is
# no faster, so longer scans loop). The values are the same.
SCAN_UNROLL = 8


@dataclasses.dataclass(frozen=True)
class Neuron:
    """Frozen, hashable description of IF/LIF dynamics.

    Attributes:
      threshold: firing threshold ``theta > 0``.
      tau: membrane time constant; ``None`` for IF, ``tau >= 1`` for LIF (``tau=1`` forgets at once).
      reset: ``"subtract"`` (soft reset, keeps the residual) or ``"zero"`` (hard reset).
      v_init: initial potential ``v_0``.
      surrogate: backward pass of the step function (``triangle``, ``atan``, ``sigmoid``,
        ``rectangle``), used by BPTT through :func:`~noisesnn_jax.neurons.run`.
      alpha: surrogate sharpness; ``None`` takes the surrogate's default.

    Raises:
      ValueError: a field is out of range or ``reset``/``surrogate`` is not known.
    """

    threshold: float = 1.0
    tau: float | None = None
    reset: str = "subtract"
    v_init: float = 0.0
    surrogate: str = "triangle"
    alpha: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and self.threshold > 0):
            raise ValueError(f"threshold={self.threshold!r} is invalid; it must be a finite number > 0")
        if self.tau is not None and not (isinstance(self.tau, (int, float))
                                         and math.isfinite(self.tau) and self.tau >= 1):
            raise ValueError(f"tau={self.tau!r} is invalid; use None (IF) or a finite number >= 1 (LIF)")
        if self.reset not in RESETS:
            raise ValueError(f"reset={self.reset!r} is invalid; choose one of {list(RESETS)}")
        if not (isinstance(self.v_init, (int, float)) and math.isfinite(self.v_init)):
            raise ValueError(f"v_init={self.v_init!r} is invalid; it must be a finite number")
        try:
            check_surrogate(self.surrogate)
        except ValueError as e:
            raise ValueError(str(e)) from None
        if self.alpha is not None and not (isinstance(self.alpha, (int, float))
                                           and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha={self.alpha!r} is invalid; use None or a finite number > 0")

    @property
    def surrogate_alpha(self) -> float:
        """The surrogate sharpness in effect."""
        return DEFAULT_ALPHA[self.surrogate] if self.alpha is None else float(self.alpha)


def charge(neuron: Neuron, v: Array, x: Array) -> Array:
    """Charged potential ``m = v + x`` (IF) or ``v + (x - v) / tau`` (LIF).

    Args:
      neuron: the dynamics.
      v: potential after the previous step, any shape.
      x: input current, broadcastable with ``v``.

    Returns:
      The charged potential ``m``.
    """
    if neuron.tau is None:
        return v + x
    return v + (x - v) / neuron.tau


def fire(neuron: Neuron, m: Array, threshold: Array | float | None = None) -> Array:
    """Spike ``1[m >= theta]`` with the neuron's surrogate gradient.

    Args:
      neuron: the dynamics.
      m: charged potential, any shape.
      threshold: ``theta`` (a learnable array broadcastable with ``m``); ``None`` takes
        ``neuron.threshold``.

    Returns:
      0/1 spikes of ``m``'s shape and dtype.
    """
    theta = neuron.threshold if threshold is None else threshold
    return heaviside((m - theta) / theta, neuron.surrogate, neuron.surrogate_alpha)


def reset(neuron: Neuron, m: Array, spike: Array, threshold: Array | float | None = None) -> Array:
    """Potential after firing: ``m - theta*s`` (subtract) or ``m*(1 - s)`` (zero).

    Args:
      neuron: the dynamics.
      m: charged potential.
      spike: the spikes fired from ``m``.
      threshold: ``theta``; ``None`` takes ``neuron.threshold``.

    Returns:
      The potential after the reset.
    """
    theta = neuron.threshold if threshold is None else threshold
    if neuron.reset == "subtract":
        return m - theta * spike
    return m * (1.0 - spike)


def step(neuron: Neuron, v: Array, x: Array,
         threshold: Array | float | None = None) -> tuple[Array, Array]:
    """One time step: ``(v_{t-1}, x_t) -> (v_t, s_t)``.

    Args:
      neuron: the dynamics.
      v: potential ``v_{t-1}``, any shape.
      x: input current ``x_t``, broadcastable with ``v``.
      threshold: overrides ``neuron.threshold`` (``None``: the neuron's).

    Returns:
      ``(v_t, s_t)``: the potential after the reset and the 0/1 spikes.
    """
    m = charge(neuron, v, x)
    s = fire(neuron, m, threshold)
    return reset(neuron, m, s, threshold), s


def initial_potential(neuron: Neuron, like: Array, v0: Array | float | None = None) -> Array:
    """``v_0`` broadcast to ``like``'s shape and dtype.

    Args:
      neuron: the dynamics.
      like: an array of the potential's shape and dtype.
      v0: the initial potential (a scalar or an array broadcastable to ``like``); ``None`` takes
        ``neuron.v_init``.

    Returns:
      ``v_0`` of ``like``'s shape and dtype.
    """
    value = neuron.v_init if v0 is None else v0
    return jnp.broadcast_to(jnp.asarray(value, like.dtype), like.shape)


def run(neuron: Neuron, xs: Array, v0: Array | float | None = None,
        threshold: Array | float | None = None, remat: bool = False) -> tuple[Array, Array]:
    """Run ``T`` steps under ``lax.scan``: ``xs [T, ...] -> (spikes [T, ...], v_T [...])``.

    Args:
      neuron: the dynamics.
      xs: input currents, time-major ``[T, ...]``; a non-floating input is cast to float32.
      v0: initial potential (see :func:`initial_potential`); ``None`` takes ``neuron.v_init``.
      threshold: overrides ``neuron.threshold``; an array is cast to the potential's dtype.
      remat: wrap each step in ``jax.checkpoint``: the backward pass recomputes a step's
        internals from its saved potential (memory for BPTT, same values).

    Returns:
      ``(spikes [T, ...], v_T [...])``.

    Raises:
      ValueError: ``xs`` is a scalar (no time axis).
    """
    xs = jnp.asarray(xs)
    if xs.ndim < 1:
        raise ValueError(f"xs must be time-major [T, ...]; got a scalar of shape {xs.shape}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        xs = xs.astype(jnp.float32)
    return _scan(neuron, initial_potential(neuron, xs[0], v0), xs, None, len(xs), threshold=threshold, remat=remat)


def _scan(neuron: Neuron, v: Array, xs: Array | None, x: Array | None, length: int, *,
          threshold: Array | float | None, remat: bool) -> tuple[Array, Array]:
    """``lax.scan`` of :func:`step` over ``xs [T, ...]``, or over ``length`` steps of a constant ``x``."""
    if threshold is not None:  # a float32 threshold array on bfloat16 currents: the potential's dtype
        threshold = jnp.asarray(threshold, v.dtype)

    def body(v: Array, x_t: Array | None) -> tuple[Array, Array]:
        return step(neuron, v, x if x_t is None else x_t, threshold)

    if remat:
        body = jax.checkpoint(body)
    v_final, spikes = jax.lax.scan(body, v, xs, length=length, unroll=length if length <= SCAN_UNROLL else 1)
    return spikes, v_final


def run_constant(neuron: Neuron, x: Array, timesteps: int, v0: Array | float | None = None,
                 threshold: Array | float | None = None, remat: bool = False) -> tuple[Array, Array]:
    """Run ``T`` steps on a current held constant over time: ``x [...] -> (spikes [T, ...], v_T)``.

    Equal to ``run(neuron, broadcast(x, [T, ...]))`` without materializing ``T`` copies of ``x``.

    Args:
      neuron: the dynamics.
      x: the input current ``[...]``, the same at every step; a non-floating input is cast to
        float32.
      timesteps: ``T``, the number of steps.
      v0: initial potential; ``None`` takes ``neuron.v_init``.
      threshold: overrides ``neuron.threshold``; an array is cast to the potential's dtype.
      remat: wrap each step in ``jax.checkpoint`` (see :func:`run`).

    Returns:
      ``(spikes [T, ...], v_T [...])``.

    Raises:
      ValueError: ``timesteps < 1``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if int(timesteps) < 1:
        raise ValueError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
    return _scan(neuron, initial_potential(neuron, x, v0), None, x, int(timesteps), threshold=threshold,
                 remat=remat)
