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
    with pytest.raises(ValueError, match=r"^noisy_spike needs a PRNG key to sample noise; pass key=\.\.\. or "
                                         r"sample=False$"):
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


def _lowbias32(x: int) -> int:
    """The published ``lowbias32`` integer hash, in Python integers (an independent reference)."""
    mask = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & mask
    x ^= x >> 15
    x = (x * 0x846CA68B) & mask
    return x ^ (x >> 16)


def test_hash_uniform_is_the_documented_counter_hash():
    """``mix(mix(index + seed) ^ seed2) >> 8`` with mix = lowbias32, element by element in Python:
    the statistical checks above cannot tell a weakened mixer (a shift turned the other way, a
    constant off by one bit) from the real one."""
    from noisesnn_jax.spikes import _mix32

    rng = np.random.default_rng(0)
    xs = np.concatenate([np.arange(8), [0xFFFFFFFF, 0x80000000, 0xDEADBEEF], rng.integers(0, 2 ** 32, 50)])
    got = np.asarray(_mix32(jnp.asarray(xs, jnp.uint32)))
    assert [int(g) for g in got] == [_lowbias32(int(x)) for x in xs]
    key = jax.random.key(11)
    seeds = [int(s) for s in np.asarray(jax.random.bits(key, (2,), jnp.uint32))]
    u = np.asarray(hash_uniform(key, (3, 5)))
    want = [_lowbias32(_lowbias32((i + seeds[0]) & 0xFFFFFFFF) ^ seeds[1]) >> 8 for i in range(15)]
    assert u.dtype == np.float32 and u.ravel().tolist() == [float(w) for w in want]


@pytest.mark.parametrize("n", [1, 4, 7])
def test_uniform16_takes_two_uniforms_from_each_random_word(n):
    """Half the random bits: ``n`` uniforms come from ``ceil(n / 2)`` words, low halves first."""
    key = jax.random.key(3)
    words = np.asarray(jax.random.bits(key, ((n + 1) // 2,), jnp.uint32))
    u = uniform16(key, (n,))
    assert u.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(u), np.concatenate([words & 0xFFFF, words >> 16])[:n])


@pytest.mark.parametrize("kind", KINDS + ["none"])
def test_noise_functions_keep_a_bfloat16_dtype(kind):
    key, z = jax.random.key(0), jnp.linspace(-2.0, 2.0, 9, dtype=jnp.bfloat16)
    assert sample_standard(kind, key, (3, 4), jnp.bfloat16).dtype == jnp.bfloat16
    if kind != "none":
        assert standard_pdf(kind, z).dtype == jnp.bfloat16
        assert standard_cdf(kind, z).dtype == jnp.bfloat16


def test_uniform_density_holds_on_its_closed_support():
    """The uniform noise lives on the closed interval [-sqrt 3, sqrt 3]: its density there, 0 outside."""
    edge = np.float32(math.sqrt(3.0))
    z = jnp.asarray([-edge, edge, np.nextafter(edge, np.float32(4)), 0.0], jnp.float32)
    np.testing.assert_allclose(np.asarray(standard_pdf("uniform", z)), [1 / (2 * math.sqrt(3))] * 2 + [0.0] +
                               [1 / (2 * math.sqrt(3))], rtol=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind,tau", [("triangular", 2.0), ("gaussian", 4.0)])
def test_lif_spike_fires_with_the_probability_of_its_charged_noisy_potential(kind, tau, sampler):
    """A LIF neuron charges the noise like its multi-step self, m = n + (x - n)/tau with
    n = theta*(mu + sigma*eps): it fires when eps >= z_lif, z_lif = ((theta - x/tau)/(1 - 1/tau) -
    theta*mu)/(theta*sigma). Its rate is 1 - F(z_lif) and its gradient the density there times
    dz_lif/dx (written out here from the charge, not from the library's coefficients)."""
    theta, mu, sigma = 1.5, 0.4, 0.3
    neuron, noise = Neuron(theta, tau=tau), Noise(kind, mean=mu, std=sigma, sampler=sampler)
    x = jnp.linspace(-0.5, 6.5, 29) + 0.011
    z = ((theta - np.asarray(x) / tau) / (1 - 1 / tau) - theta * mu) / (theta * sigma)
    p = 1.0 - np.asarray(standard_cdf(kind, jnp.asarray(z, jnp.float32)))
    assert np.sum((p > 0.05) & (p < 0.95)) >= 5 and p[0] < 0.01 and p[-1] > 0.5  # the grid crosses it
    n = 20_000
    s = np.asarray(noisy_spike(neuron, noise, jnp.broadcast_to(x, (n, 29)), jax.random.key(4)))
    assert np.all(np.abs(s.mean(0) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3)
    g = jax.grad(lambda x: noisy_spike(neuron, noise, x, jax.random.key(5)).sum())(x)
    want = np.asarray(standard_pdf(kind, jnp.asarray(z, jnp.float32))) / tau / ((1 - 1 / tau) * theta * sigma)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)


def test_memoryless_lif_and_noise_none_fire_on_the_charged_mean_with_the_named_surrogate():
    """tau = 1 forgets the noise (m = x) and kind ``none`` charges the mean (m = theta*mu + x): both
    fire on ``u = (m - theta)/theta >= 0`` with the neuron's surrogate ``d/dx = surrogate(u)/theta``."""
    from noisesnn_jax.surrogate import SURROGATES

    theta, alpha = 2.0, 3.0
    x = jnp.array([-0.3, 0.7, 0.99, 1.0, 1.6, 2.4])
    for neuron, noise, m in ((Neuron(theta, tau=1.0, surrogate="atan", alpha=alpha), Noise("gaussian"), x),
                             (Neuron(theta, surrogate="atan", alpha=alpha), Noise("none", mean=0.5), x + 1.0)):
        u = (np.asarray(m) - theta) / theta
        s = noisy_spike(neuron, noise, x, jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(s), (u >= 0).astype(np.float32))
        g = jax.grad(lambda x: noisy_spike(neuron, noise, x, jax.random.key(0)).sum())(x)
        np.testing.assert_allclose(np.asarray(g), np.asarray(SURROGATES["atan"](jnp.asarray(u), alpha)) / theta,
                                   rtol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bfloat16_gradients_keep_their_dtype(sampler):
    x = jnp.linspace(-0.5, 1.5, 8, dtype=jnp.bfloat16)
    g = jax.grad(lambda x: noisy_spike(Neuron(), Noise(sampler=sampler), x, jax.random.key(0)).astype(
        jnp.float32).sum())(x)
    assert g.dtype == jnp.bfloat16
    ref = jax.grad(lambda x: expected_spike(Noise(), x).sum())(x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(ref), rtol=0.02, atol=1e-3)


def test_an_integer_current_fires_as_float32_and_the_default_threshold_is_one():
    s = noisy_spike(Neuron(), Noise(), jnp.array([0, 1, 2]), sample=False)
    assert s.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(s), [0, 1, 1])
    x = jnp.linspace(-0.5, 1.5, 9)
    np.testing.assert_array_equal(np.asarray(expected_spike(Noise(), x)), np.asarray(expected_spike(Noise(), x, 1.0)))


@pytest.mark.parametrize("function,what", [(standard_pdf, "density"), (standard_cdf, "distribution")])
def test_noise_none_has_no_density_or_distribution(function, what):
    with pytest.raises(ValueError, match=f"noise kind='none' has no {what}; choose one of gaussian, uniform"):
        function("none", jnp.zeros(3))


@pytest.mark.parametrize("sampler,dtype", [("reparam", jnp.float32), ("reparam", jnp.bfloat16),
                                           ("uniform16", jnp.float32), ("hash", jnp.float32)])
def test_each_sampler_fires_by_its_documented_rule(sampler, dtype):
    """Spike by spike, from the sampler's own random numbers (computed here in float64):
    ``reparam`` fires on ``x + theta*(mu + sigma*eps) >= theta`` with ``eps`` drawn in the current's
    dtype; ``uniform16`` and ``hash`` on ``u + 1/2 < 2**bits * P(fire)`` with their 16- or 24-bit
    ``u``. Ties closer than the float rounding of the comparison are left out (a few in a
    million). The distribution checks above cannot tell the samplers apart."""
    theta, mu, sigma = 1.25, 0.5, 0.4
    noise, key = Noise("uniform", mean=mu, std=sigma, sampler=sampler), jax.random.key(9)
    x = jnp.linspace(-0.2, 1.4, 2_000_000 if sampler != "reparam" else 200_000).astype(dtype)
    s = np.asarray(noisy_spike(Neuron(theta), noise, x, key), np.float64)
    assert s.dtype == np.float64 and noisy_spike(Neuron(theta), noise, x, key).dtype == dtype
    xf = np.asarray(x, np.float64)
    if sampler == "reparam":
        eps = np.asarray(sample_standard("uniform", key, x.shape, dtype), np.float64)
        margin, tie = xf + theta * (mu + sigma * eps) - theta, (1e-5 if dtype == jnp.float32 else 2e-2)
    else:
        bits, draw = (16, uniform16) if sampler == "uniform16" else (24, hash_uniform)
        z = (theta * (1 - mu) - xf) / (theta * sigma)
        p = 1.0 - np.clip((z + math.sqrt(3)) / (2 * math.sqrt(3)), 0.0, 1.0)
        margin = 2.0 ** bits * p - (np.asarray(draw(key, x.shape), np.float64) + 0.5)
        tie = 2e-3 if bits == 16 else 4.0  # float32 holds 2**24 * P to about one unit
    clear = np.abs(margin) > tie
    assert clear.mean() > (0.95 if dtype == jnp.bfloat16 else 0.99) and 0.2 < s.mean() < 0.8
    np.testing.assert_array_equal(s[clear], (margin[clear] >= 0).astype(np.float64))


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"noise kind='cauchy' is invalid; choose one of \['gaussian', 'uniform', "
                                         r"'triangular', 'logistic', 'none'\]"):
        sample_standard("cauchy", jax.random.key(0), (2,))
