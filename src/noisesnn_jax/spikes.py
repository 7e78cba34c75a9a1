"""Noise distributions and the single-step (T=1) noisy spiking neuron (docs/method.md, section 3).

A T=1 neuron with threshold ``theta`` carries a noise offset ``n = theta * (mu + sigma * eps)``
on its potential, where ``eps`` has zero mean and unit variance, and fires ``s = 1[x + n >= theta]``.
The spike is a Bernoulli variable with mean::

    E[s] = P(eps >= z) = 1 - F(z),     z = (theta * (1 - mu) - x) / (theta * sigma)

and the backward pass is the exact gradient of that expectation, the noise density at the
boundary: ``dE[s]/dx = p(z) / (theta * sigma)``. Gradients with respect to ``theta`` and
``sigma`` follow from the same formula by the chain rule through ``z``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array
from noisesnn_jax.neurons import Neuron, charge
from noisesnn_jax.surrogate import heaviside

SAMPLERS = ("reparam", "uniform16", "hash")
_SQRT3 = math.sqrt(3.0)
_LOGISTIC_SCALE = _SQRT3 / math.pi  # logistic scale with unit variance
_SQRT6 = math.sqrt(6.0)  # half-width of the symmetric triangular distribution with unit variance


@dataclasses.dataclass(frozen=True)
class Noise:
    """Noise on the T=1 potential, in units of the threshold.

    Attributes:
      kind: ``triangular`` (the default), ``gaussian``, ``uniform``, ``logistic`` or ``none``
        (deterministic: ``n = mean``). The triangular and uniform kinds have piecewise-polynomial
        distribution functions and densities, the cheapest to evaluate; the triangular one, the
        sum of two uniforms, matched or beat the Gaussian's accuracy (mnist5k and Fashion-MNIST,
        3 seeds each: ``experiments/results/noise_kinds.md``) at a fraction of its cost.
      mean: ``mu``; the multi-step network starts at ``v_init = mu * theta``.
      std: ``sigma > 0`` (ignored by ``none``). The defaults ``mu = 1/2``, ``sigma = 1/sqrt(12)``
        are the mean and standard deviation of the residual potential, uniform on ``[0, theta)``.
      sampler: how a training spike is drawn (default ``hash``, the cheapest, as in the
        command's configs). ``reparam`` draws ``eps`` and fires on
        ``x + n >= theta``. ``uniform16`` fires on ``u < P(fire | x) = 1 - F(z)`` with a 16-bit
        uniform ``u``, two per 32-bit random word: the same Bernoulli distribution up to a
        ``2**-16`` rounding of the probability, the same gradient, and half the random bits.
        ``hash`` fires on ``u < P(fire | x)`` with a 24-bit ``u`` from a counter-based integer
        hash of the element index and a seed drawn from the key (:func:`~noisesnn_jax.spikes.hash_uniform`): not a
        cryptographic generator, but fused into the spike and nearly free.

    Raises:
      ValueError: an unknown ``kind`` or ``sampler``, a non-finite ``mean``, or ``std <= 0``.
    """

    kind: str = "triangular"
    mean: float = 0.5
    std: float = 12 ** -0.5
    sampler: str = "hash"

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind={self.kind!r} is invalid; choose one of {list(NOISE_KINDS)}")
        if not (isinstance(self.mean, (int, float)) and math.isfinite(self.mean)):
            raise ValueError(f"noise mean={self.mean!r} is invalid; it must be a finite number")
        if not (isinstance(self.std, (int, float)) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"noise std={self.std!r} is invalid; it must be a finite number > 0")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"noise sampler={self.sampler!r} is invalid; choose one of {list(SAMPLERS)}")

    @property
    def stochastic(self) -> bool:
        """Whether the noise is random (every kind but ``none``)."""
        return self.kind != "none"


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A standardized noise distribution (mean 0, variance 1).

    Attributes:
      sample: ``(key, shape, dtype) -> eps`` of that shape and dtype.
      pdf: the density ``p(z)``; ``None`` for the deterministic kind.
      cdf: the distribution function ``F(z) = P(eps <= z)``; ``None`` for the deterministic kind.
    """

    sample: Callable[[Array, tuple[int, ...], Any], Array]
    pdf: Callable[[Array], Array] | None
    cdf: Callable[[Array], Array] | None


def _uniform_pdf(z: Array) -> Array:
    return jnp.where(jnp.abs(z) <= _SQRT3, 1.0 / (2.0 * _SQRT3), 0.0).astype(z.dtype)


def _gaussian_cdf(z: Array) -> Array:
    """``Phi(z) = (1 + erf(z / sqrt 2)) / 2``: one erf per element (``jax.scipy.stats.norm.cdf``
    evaluates erf and erfc for relative accuracy in the far tail, which a firing probability
    compared with a 24-bit uniform does not need; the two differ by under 2e-7)."""
    return 0.5 + 0.5 * jax.lax.erf(z * (1.0 / math.sqrt(2.0)))


def _triangular_pdf(z: Array) -> Array:
    return jnp.maximum(_SQRT6 - jnp.abs(z), 0.0) / 6.0


def _triangular_cdf(z: Array) -> Array:
    """Piecewise quadratic: ``(a + z)^2 / (2a^2)`` below 0, ``1 - (a - z)^2 / (2a^2)`` above, ``a = sqrt 6``."""
    tail = jnp.square(jnp.maximum(_SQRT6 - jnp.abs(z), 0.0)) / 12.0
    return jnp.where(z < 0, tail, 1.0 - tail)


def _triangular_sample(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """The sum of two independent uniforms on ``[-a/2, a/2]`` is triangular on ``[-a, a]``."""
    u = jax.random.uniform(key, (2,) + tuple(shape), dtype, minval=-0.5, maxval=0.5)
    return (u[0] + u[1]) * jnp.asarray(_SQRT6, dtype)


def _logistic_pdf(z: Array) -> Array:
    s = jax.nn.sigmoid(z / _LOGISTIC_SCALE)
    return s * (1.0 - s) / _LOGISTIC_SCALE


#: The standardized noise distributions by kind (see :class:`Noise`).
DISTRIBUTIONS: dict[str, Distribution] = {
    "gaussian": Distribution(
        sample=lambda key, shape, dtype: jax.random.normal(key, shape, dtype),
        pdf=lambda z: jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi),
        cdf=_gaussian_cdf),
    "uniform": Distribution(
        sample=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, minval=-_SQRT3, maxval=_SQRT3),
        pdf=_uniform_pdf,
        cdf=lambda z: jnp.clip((z + _SQRT3) / (2.0 * _SQRT3), 0.0, 1.0)),
    "triangular": Distribution(sample=_triangular_sample, pdf=_triangular_pdf, cdf=_triangular_cdf),
    "logistic": Distribution(
        sample=lambda key, shape, dtype: jax.random.logistic(key, shape, dtype) * jnp.asarray(_LOGISTIC_SCALE, dtype),
        pdf=_logistic_pdf,
        cdf=lambda z: jax.nn.sigmoid(z / _LOGISTIC_SCALE)),
    "none": Distribution(sample=lambda key, shape, dtype: jnp.zeros(shape, dtype), pdf=None, cdf=None),
}
NOISE_KINDS = tuple(DISTRIBUTIONS)


def _distribution(kind: str, need: str = "") -> Distribution:
    """The table entry of ``kind``; ``need`` (``pdf`` or ``cdf``) must exist for it."""
    dist = DISTRIBUTIONS.get(kind)
    if dist is None:
        raise ValueError(f"noise kind={kind!r} is invalid; choose one of {list(DISTRIBUTIONS)}")
    if need and getattr(dist, need) is None:
        random = [k for k, d in DISTRIBUTIONS.items() if getattr(d, need) is not None]
        what = "density" if need == "pdf" else "distribution"
        raise ValueError(f"noise kind={kind!r} has no {what}; choose one of {', '.join(random)}")
    return dist


def sample_standard(kind: str, key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Draw ``eps`` with zero mean and unit variance from the standardized ``kind``.

    Args:
      kind: a noise kind (:data:`NOISE_KINDS`); ``none`` gives zeros.
      key: the PRNG key.
      shape: the shape of ``eps``.
      dtype: its floating dtype.

    Returns:
      ``eps`` of ``shape`` and ``dtype``.

    Raises:
      ValueError: ``kind`` is not known.
    """
    return _distribution(kind).sample(key, shape, dtype)


def standard_pdf(kind: str, z: Array) -> Array:
    """Density ``p(z)`` of the standardized noise.

    Args:
      kind: a random noise kind (not ``none``).
      z: the points, any shape.

    Returns:
      ``p(z)``, of ``z``'s shape.

    Raises:
      ValueError: ``kind`` is not known or has no density (``none``).
    """
    return _distribution(kind, "pdf").pdf(z)


def standard_cdf(kind: str, z: Array) -> Array:
    """Distribution function ``F(z) = P(eps <= z)`` of the standardized noise.

    Args:
      kind: a random noise kind (not ``none``).
      z: the points, any shape.

    Returns:
      ``F(z)``, of ``z``'s shape.

    Raises:
      ValueError: ``kind`` is not known or has no distribution function (``none``).
    """
    return _distribution(kind, "cdf").cdf(z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fire_on_margin(kind: str, z: Array, margin: Array) -> Array:
    """Forward ``1[margin >= 0]``; backward ``d/dz = -p(z)`` (the margin carries no gradient)."""
    return (margin >= 0).astype(z.dtype)


def _fire_fwd(kind: str, z: Array, margin: Array) -> tuple[Array, Array]:
    return _fire_on_margin(kind, z, margin), z


def _fire_bwd(kind: str, z: Array, g: Array) -> tuple[Array, Array]:
    return -g * standard_pdf(kind, z).astype(g.dtype), jnp.zeros_like(z)


_fire_on_margin.defvjp(_fire_fwd, _fire_bwd)


def uniform16(key: Array, shape: tuple[int, ...]) -> Array:
    """Uniform integers in ``[0, 65536)`` as float32, two per 32-bit random word.

    Args:
      key: the PRNG key.
      shape: the output shape.

    Returns:
      float32 integers of ``shape``.
    """
    n = math.prod(shape)
    words = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([words & 0xFFFF, words >> 16])[:n]
    return halves.astype(jnp.float32).reshape(shape)


def _mix32(h: Array) -> Array:
    """The ``lowbias32`` integer finalizer: a bijection of uint32 with strong avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def hash_uniform(key: Array, shape: tuple[int, ...]) -> Array:
    """Uniform integers in ``[0, 2**24)`` as float32: ``mix(mix(index + seed) ^ seed2) >> 8``.

    Counter-based: element ``i`` depends only on ``(key, i)``; two 32-bit seeds come from the key.

    Args:
      key: the PRNG key.
      shape: the output shape; elements are indexed in row-major order.

    Returns:
      float32 integers of ``shape``.
    """
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    n = math.prod(shape)
    idx = jax.lax.iota(jnp.uint32, n).reshape(shape)
    h = _mix32(_mix32(idx + seeds[0]) ^ seeds[1])
    return (h >> 8).astype(jnp.float32)


def expected_spike(noise: Noise, x: Array, threshold: Array | float = 1.0,
                   std: Array | float | None = None) -> Array:
    """Firing probability ``E[s] = 1 - F((theta*(1 - mu) - x) / (theta*sigma))`` of an IF neuron.

    Args:
      noise: the noise distribution (a random kind).
      x: input current, any shape.
      threshold: ``theta``, a scalar or an array broadcastable with ``x``.
      std: overrides ``noise.std``.

    Returns:
      The probability, of ``x``'s shape.

    Raises:
      ValueError: the noise kind has no distribution function (``none``).
    """
    sigma = noise.std if std is None else std
    z = (threshold * (1.0 - noise.mean) - x) / (threshold * sigma)
    return 1.0 - standard_cdf(noise.kind, z)


def noisy_spike(neuron: Neuron, noise: Noise, x: Array, key: Array | None = None, *,
                threshold: Array | float | None = None, std: Array | float | None = None,
                sample: bool = True) -> Array:
    """T=1 spike ``1[x + n >= theta]``, ``n = theta*(mu + sigma*eps)``, with the noise-density gradient.

    Args:
      neuron: threshold and (for kind ``none``) the surrogate gradient.
      noise: the noise distribution.
      x: input current, any shape, floating dtype.
      key: PRNG key for ``eps``; required when ``sample`` and the noise is random.
      threshold: overrides ``neuron.threshold`` (e.g. a learnable per-channel array).
      std: overrides ``noise.std`` (e.g. a learnable per-channel array).
      sample: draw ``eps`` (training, sampled evaluation) or set it to its mean 0.

    Returns:
      0/1 spikes in ``x``'s dtype. Backward: ``p(z) / (theta*sigma)`` with respect to ``x``; for kind
      ``none``, the neuron's named surrogate of ``(x + theta*mu - theta) / theta``. A LIF neuron
      charges the noisy potential like its multi-step self, ``m = n + (x - n)/tau``, so the noise
      enters scaled by ``1 - 1/tau`` and the current by ``1/tau``.

    Raises:
      ValueError: ``sample`` with random noise and no ``key``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    theta = neuron.threshold if threshold is None else threshold
    # The potential before charging is the noise n; LIF charges m = n + (x - n)/tau, i.e.
    # m = c_v*n + c_x*x with (c_v, c_x) = (1 - 1/tau, 1/tau); IF has (1, 1).
    c_v, c_x = (1.0, 1.0) if neuron.tau is None else (1.0 - 1.0 / neuron.tau, 1.0 / neuron.tau)
    if noise.kind == "none" or c_v == 0.0:
        m = charge(neuron, theta * noise.mean * jnp.ones_like(x), x)
        return heaviside((m - theta) / theta, neuron.surrogate, neuron.surrogate_alpha)
    sigma = noise.std if std is None else std
    z = (theta - c_x * x - c_v * theta * noise.mean) / (c_v * theta * sigma)
    if sample and key is None:
        raise ValueError("noisy_spike needs a PRNG key to sample noise; pass key=... or sample=False")
    if sample and noise.sampler in ("uniform16", "hash"):
        # fire iff u + 1/2 < 2**bits * P(fire), u uniform on {0 .. 2**bits - 1}
        p_fire = 1.0 - standard_cdf(noise.kind, z.astype(jnp.float32))
        if noise.sampler == "uniform16":
            u, scale = uniform16(key, x.shape), 65536.0
        else:
            u, scale = hash_uniform(key, x.shape), 16777216.0
        margin = jax.lax.stop_gradient(p_fire * scale - (u + 0.5))
        return _fire_on_margin(noise.kind, z, margin.astype(x.dtype))
    if sample:
        eps = sample_standard(noise.kind, key, x.shape, x.dtype)
        n = theta * (noise.mean + sigma * eps)
    else:
        n = theta * noise.mean * jnp.ones_like(x)
    margin = jax.lax.stop_gradient(charge(neuron, n, x) - theta)
    return _fire_on_margin(noise.kind, z, margin)
