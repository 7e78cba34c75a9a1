"""The T=1 noisy spike: forward is a real spike, backward is the exact gradient of E[s]."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import Neuron, Noise, expected_spike, noisy_spike
from noisesnn_jax.spikes import SAMPLERS, hash_uniform, sample_standard, standard_cdf, standard_pdf, uniform16

KINDS = ["gaussian", "uniform", "triangular", "logistic"]


@pytest.mark.parametrize("kind", KINDS)
def test_standard_noise_has_zero_mean_unit_variance(kind):
    eps = np.asarray(sample_standard(kind, jax.random.key(0), (200_000,)))
    assert abs(eps.mean()) < 0.01
    assert abs(eps.std() - 1.0) < 0.01


def test_distribution_functions_match_scipy():
    """Each kind's F and p are those of its standardized law (scipy's, independently written)."""
    stats = pytest.importorskip("scipy.stats")
    z = np.linspace(-6.0, 6.0, 2401)
    laws = {"gaussian": stats.norm(), "uniform": stats.uniform(-math.sqrt(3), 2 * math.sqrt(3)),
            "triangular": stats.triang(0.5, loc=-math.sqrt(6), scale=2 * math.sqrt(6)),
            "logistic": stats.logistic(scale=math.sqrt(3) / math.pi)}
    for kind, law in laws.items():
        assert law.var() == pytest.approx(1.0) and law.mean() == pytest.approx(0.0, abs=1e-12)
        np.testing.assert_allclose(np.asarray(standard_cdf(kind, jnp.asarray(z, jnp.float32))), law.cdf(z),
                                   atol=2e-7, err_msg=kind)
        np.testing.assert_allclose(np.asarray(standard_pdf(kind, jnp.asarray(z, jnp.float32))), law.pdf(z),
                                   atol=1e-6, err_msg=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_pdf_is_derivative_of_cdf(kind):
    z = jnp.linspace(-3.0, 3.0, 61) + 0.013  # off the uniform's kinks
    d = jax.vmap(jax.grad(lambda t: standard_cdf(kind, t)))(z)
    np.testing.assert_allclose(np.asarray(d), np.asarray(standard_pdf(kind, z)), atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_is_binary_and_matches_expectation(kind, sampler):
    """Monte Carlo firing rate equals E[s] = 1 - F(z) within 5 standard errors, for every sampler."""
    neuron, noise = Neuron(threshold=2.0), Noise(kind, sampler=sampler)
    x = jnp.linspace(-0.5, 2.5, 13)
    n = 20_000
    xs = jnp.broadcast_to(x, (n, 13))
    s = np.asarray(noisy_spike(neuron, noise, xs, jax.random.key(1)))
    assert set(np.unique(s)) <= {0.0, 1.0}
    p = np.asarray(expected_spike(noise, x, 2.0))
    se = np.sqrt(p * (1 - p) / n) + 1e-3
    assert np.all(np.abs(s.mean(0) - p) < 5 * se)


def test_default_uniform_expectation_is_clip():
    """With n ~ U(0, theta) (the defaults), E[s] = clip(x/theta, 0, 1): the IF neuron's large-T rate."""
    x = jnp.linspace(-1.0, 3.0, 41)
    np.testing.assert_allclose(np.asarray(expected_spike(Noise("uniform"), x, 2.0)),
                               np.clip(np.asarray(x) / 2.0, 0, 1), atol=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_is_derivative_of_expectation(kind, sampler):
    """d s / d x (backward) == d E[s] / d x (analytic), for any noise draw and sampler."""
    neuron, noise = Neuron(threshold=1.5), Noise(kind, mean=0.4, std=0.3, sampler=sampler)
    x = jnp.linspace(-0.4, 2.1, 26) + 0.007
    g = jax.grad(lambda x: noisy_spike(neuron, noise, x, jax.random.key(2)).sum())(x)
    ref = jax.vmap(jax.grad(lambda x: expected_spike(noise, x, 1.5)))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-5, atol=1e-7)
    # explicit formula: p(z) / (theta*sigma)
    z = (1.5 * (1 - 0.4) - x) / (1.5 * 0.3)
    np.testing.assert_allclose(np.asarray(g), np.asarray(standard_pdf(kind, z)) / (1.5 * 0.3),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_wrt_threshold_and_std(kind):
    """Learnable threshold and std: gradients of E[s] by the chain rule through z."""
    noise = Noise(kind, mean=0.5, std=0.25)
    x = jnp.linspace(0.1, 1.9, 10) + 0.003
    theta, sigma = jnp.full(10, 1.2), jnp.full(10, 0.25)

    def spikes(theta, sigma):
        return noisy_spike(Neuron(), noise, x, jax.random.key(3), threshold=theta, std=sigma).sum()

    def expect(theta, sigma):
        return expected_spike(noise, x, theta, sigma).sum()

    gt, gs = jax.grad(spikes, argnums=(0, 1))(theta, sigma)
    et, es = jax.grad(expect, argnums=(0, 1))(theta, sigma)
    np.testing.assert_allclose(np.asarray(gt), np.asarray(et), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gs), np.asarray(es), rtol=1e-5, atol=1e-7)


def test_deterministic_mode_uses_the_mean():
    """sample=False: n = mu*theta, so s = 1[x >= theta*(1 - mu)]."""
    x = jnp.array([0.2, 0.49, 0.5, 0.51, 0.9])
    s = noisy_spike(Neuron(1.0), Noise("gaussian"), x, sample=False)
    np.testing.assert_array_equal(np.asarray(s), [0, 0, 1, 1, 1])


def test_noise_needs_key_when_sampling():
    with pytest.raises(ValueError, match="key"):
        noisy_spike(Neuron(), Noise(), jnp.ones(3))


@pytest.mark.parametrize("kwargs,field", [
    (dict(kind="cauchy"), "kind"), (dict(std=0.0), "std"), (dict(std=-1.0), "std"),
    (dict(mean=float("nan")), "mean"), (dict(sampler="fast"), "sampler"),
])
def test_noise_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Noise(**kwargs)


def test_jit_and_bf16():
    f = jax.jit(lambda x, k: noisy_spike(Neuron(), Noise(), x, k))
    s = f(jnp.ones((4, 4), jnp.bfloat16) * 0.5, jax.random.key(0))
    assert s.dtype == jnp.bfloat16


@pytest.mark.parametrize("draw,bits", [(hash_uniform, 24), (uniform16, 16)])
def test_fast_uniforms_are_uniform_and_uncorrelated(draw, bits):
    u = np.asarray(draw(jax.random.key(5), (512, 513))) / 2.0 ** bits
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, bins=16, range=(0, 1))[0] / u.size
    assert np.all(np.abs(hist - 1 / 16) < 0.003)
    flat = u.ravel() - 0.5
    for lag in (1, 2, 513, 1024):  # neighbours along rows and columns
        assert abs(np.mean(flat[:-lag] * flat[lag:])) / np.var(flat) < 0.01
    v = np.asarray(draw(jax.random.key(6), (512, 513))) / 2.0 ** bits
    assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.01  # another key: independent
    np.testing.assert_array_equal(u, np.asarray(draw(jax.random.key(5), (512, 513))) / 2.0 ** bits)
