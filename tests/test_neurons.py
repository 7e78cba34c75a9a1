"""IF/LIF dynamics: closed-form spike counts for constant input, scan equal to a Python loop."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import neurons
from noisesnn_jax.neurons import Neuron

T = 16


def _away_from_boundary(values: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    return np.abs(values - np.round(values)) > tol


def test_if_subtract_closed_form():
    """count = clip(floor((T*x + v0) / theta), 0, T) for constant x (docs/method.md section 1)."""
    theta, v0 = 1.5, 0.6
    x = np.random.default_rng(0).uniform(-0.5 * theta, 1.5 * theta, 400).astype(np.float32)
    spikes, v_final = neurons.run_constant(Neuron(theta, v_init=v0), x, T)
    counts = np.asarray(spikes.sum(0))
    q = (T * x.astype(np.float64) + v0) / theta
    expected = np.clip(np.floor(q), 0, T)
    ok = _away_from_boundary(q)
    assert ok.sum() > 350
    np.testing.assert_array_equal(counts[ok], expected[ok])
    # Charge is conserved: v_T = v0 + T*x - theta*count.
    np.testing.assert_allclose(np.asarray(v_final), v0 + T * x - theta * counts, atol=1e-4)


def test_if_half_threshold_start_rounds_to_nearest():
    """With v0 = theta/2 the rate theta*count/T is clip(x) rounded to the nearest level (QCFS)."""
    theta = 1.0
    x = np.random.default_rng(1).uniform(0, theta, 300).astype(np.float32)
    spikes, _ = neurons.run_constant(Neuron(theta, v_init=theta / 2), x, T)
    ok = _away_from_boundary(T * x.astype(np.float64) / theta - 0.5)
    rate = np.asarray(spikes.mean(0)) * theta
    np.testing.assert_allclose(rate[ok], np.round(T * x[ok] / theta) / T * theta, atol=1e-6)


def test_if_zero_reset_closed_form():
    """Hard reset: first spike at k1 = ceil((theta - v0)/x), then one every ceil(theta/x) steps."""
    theta, v0 = 1.0, 0.25
    x = np.random.default_rng(2).uniform(0.05, 1.3, 400).astype(np.float64)
    x32 = x.astype(np.float32)
    spikes, _ = neurons.run_constant(Neuron(theta, reset="zero", v_init=v0), x32, T)
    k1 = np.ceil((theta - v0) / x)
    period = np.ceil(theta / x)
    expected = np.where(k1 > T, 0, 1 + np.floor((T - k1) / period))
    ok = _away_from_boundary((theta - v0) / x) & _away_from_boundary(theta / x)
    np.testing.assert_array_equal(np.asarray(spikes.sum(0))[ok], expected[ok])


def test_lif_zero_reset_closed_form():
    """LIF from 0 with hard reset: v_k = x*(1 - (1-1/tau)^k); periodic with the first-spike time."""
    theta, tau = 1.0, 2.0
    x = np.random.default_rng(3).uniform(0.8, 3.0, 300)
    spikes, _ = neurons.run_constant(Neuron(theta, tau=tau, reset="zero"), x.astype(np.float32), T)
    decay = 1 - 1 / tau
    # smallest k with x*(1 - decay^k) >= theta (never when x <= theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        kstar = np.where(x > theta, np.ceil(np.log(1 - theta / x) / np.log(decay)), np.inf)
        exact = np.log(1 - theta / x) / np.log(decay)
    expected = np.where(np.isinf(kstar), 0, np.floor(T / kstar))
    ok = (x > theta * 1.001) & _away_from_boundary(exact, 1e-3) | (x < theta * 0.999)
    np.testing.assert_array_equal(np.asarray(spikes.sum(0))[ok], expected[ok])


def test_lif_subtract_tau_one_is_memoryless():
    """tau = 1 forgets at once: m_t = x_t, so it fires exactly when x_t >= theta."""
    xs = np.random.default_rng(4).uniform(0, 2, (T, 50)).astype(np.float32)
    spikes, _ = neurons.run(Neuron(1.0, tau=1.0), xs)
    np.testing.assert_array_equal(np.asarray(spikes), (xs >= 1.0).astype(np.float32))


@pytest.mark.parametrize("tau,reset", [(None, "subtract"), (None, "zero"), (3.0, "subtract"), (3.0, "zero")])
def test_run_equals_python_loop(tau, reset):
    """lax.scan equals the textbook loop of docs/method.md section 1 (float64 numpy)."""
    theta, v0 = 0.8, 0.1
    xs = np.random.default_rng(5).normal(0.3, 0.5, (T, 64)).astype(np.float32)
    spikes, v_final = neurons.run(Neuron(theta, tau=tau, reset=reset, v_init=v0), xs)
    v = np.full(64, v0, np.float32)
    ref = []
    for x in xs:
        m = v + x if tau is None else v + (x - v) / np.float32(tau)
        s = (m >= theta).astype(np.float32)
        v = m - theta * s if reset == "subtract" else m * (1 - s)
        ref.append(s)
    np.testing.assert_array_equal(np.asarray(spikes), np.stack(ref))
    np.testing.assert_allclose(np.asarray(v_final), v, atol=1e-6)


def test_run_constant_equals_run_on_broadcast():
    x = np.random.default_rng(6).normal(0.4, 0.6, (8, 5)).astype(np.float32)
    n = Neuron(1.0, tau=2.0, v_init=0.5)
    a, va = neurons.run_constant(n, x, 12)
    b, vb = neurons.run(n, np.broadcast_to(x, (12,) + x.shape))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


def test_spikes_binary_in_input_dtype_and_jittable():
    xs = jnp.ones((4, 3), jnp.bfloat16) * 0.6
    spikes, _ = jax.jit(neurons.run, static_argnums=0)(Neuron(), xs)
    assert spikes.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(spikes, np.float32))) <= {0.0, 1.0}


def test_run_is_differentiable_with_surrogate():
    """BPTT: the gradient of the spike count flows through the triangle surrogate."""
    n = Neuron(1.0, surrogate="triangle")
    g = jax.grad(lambda x: neurons.run_constant(n, x, 4)[0].sum())(jnp.array([0.3, 0.9, 5.0]))
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(g[0]) > 0 and float(g[1]) > 0


def test_remat_over_time_gives_same_gradients():
    xs = jax.random.normal(jax.random.key(4), (6, 10)) + 0.5
    n = Neuron(1.0, surrogate="atan")
    f = lambda xs, remat: neurons.run(n, xs, 0.0, remat=remat)[0].sum()
    g0 = jax.grad(f)(xs, False)
    g1 = jax.grad(f)(xs, True)
    np.testing.assert_allclose(np.asarray(g0), np.asarray(g1), rtol=1e-6)


def test_step_single():
    v, s = neurons.step(Neuron(1.0), jnp.array([0.5, 0.5]), jnp.array([0.4, 0.6]))
    np.testing.assert_allclose(np.asarray(s), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(v), [0.9, 0.1], atol=1e-6)


@pytest.mark.parametrize("kwargs,field", [
    (dict(threshold=0.0), "threshold"), (dict(threshold=float("nan")), "threshold"),
    (dict(tau=0.5), "tau"), (dict(reset="soft"), "reset"), (dict(v_init=float("inf")), "v_init"),
    (dict(surrogate="bogus"), "surrogate"), (dict(alpha=-1.0), "alpha"), (dict(alpha=0.0), "alpha"),
])
def test_neuron_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Neuron(**kwargs)


def test_neuron_is_hashable():
    assert hash(Neuron(1.0)) == hash(Neuron(1.0))
    assert {Neuron(1.0): 1}[Neuron(1.0)] == 1


def test_integer_input_runs_as_float32():
    """An integer current (spike counts, say) is cast to float32: the same spikes and potentials
    as the same values given as floats; a floating input keeps its dtype (bfloat16 here)."""
    xs = np.array([[1, 0, 2], [0, 1, 1], [2, 2, 0], [1, 0, 1]], np.int32)
    for neuron in (Neuron(1.5), Neuron(1.5, tau=2.0, reset="zero")):
        for run in (neurons.run, lambda n, x: neurons.run_constant(n, x[2], 3)):
            spikes, v = run(neuron, xs)
            ref_spikes, ref_v = run(neuron, xs.astype(np.float32))
            assert spikes.dtype == v.dtype == jnp.float32
            np.testing.assert_array_equal(spikes, ref_spikes)
            np.testing.assert_array_equal(v, ref_v)
            spikes, v = run(neuron, jnp.asarray(xs, jnp.bfloat16))
            assert spikes.dtype == v.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(spikes, np.float32), ref_spikes)


def test_a_threshold_and_v0_passed_as_arrays_are_the_ones_used():
    """Per-channel ``threshold`` and ``v0`` arrays (what learned thresholds pass) act as if each
    channel had its own neuron with those values, in ``step``, ``run`` and ``run_constant``: the
    spikes, the reset and the start all use them, not the neuron's own fields."""
    theta, v0 = np.array([0.5, 1.0, 2.5], np.float32), np.array([0.4, -0.3, 1.2], np.float32)
    xs = np.random.default_rng(7).uniform(0.0, 1.6, (T, 3)).astype(np.float32)
    for neuron in (Neuron(1.0), Neuron(1.0, tau=2.0), Neuron(1.0, reset="zero")):
        per = [neurons.run(dataclasses.replace(neuron, threshold=float(t), v_init=float(v)), xs[:, i:i + 1])
               for i, (t, v) in enumerate(zip(theta, v0))]
        spikes, v = neurons.run(neuron, xs, v0=v0, threshold=theta)
        np.testing.assert_array_equal(spikes, np.concatenate([p[0] for p in per], 1))
        np.testing.assert_allclose(v, np.concatenate([p[1] for p in per]), atol=1e-6)
        spikes_c, v_c = neurons.run_constant(neuron, xs[0], T, v0=v0, threshold=theta)
        ref_c = neurons.run(neuron, np.broadcast_to(xs[0], xs.shape), v0=v0, threshold=theta)
        np.testing.assert_array_equal(spikes_c, ref_c[0])
        np.testing.assert_allclose(v_c, ref_c[1], atol=1e-6)
        assert 0 < float(spikes_c.mean()) < 1  # not all silent or all firing: the values matter
        low = neurons.run(neuron, jnp.asarray(xs, jnp.bfloat16), v0=v0, threshold=theta)  # v0 float32
        assert low[0].dtype == low[1].dtype == jnp.bfloat16  # the potential takes the input's dtype
    v1, s1 = neurons.step(Neuron(1.0), jnp.asarray(v0), jnp.asarray(xs[0]), theta)
    m = v0 + xs[0]
    np.testing.assert_array_equal(s1, (m >= theta).astype(np.float32))
    np.testing.assert_allclose(v1, m - theta * (m >= theta), atol=1e-6)


@pytest.mark.parametrize("surrogate,alpha", [("triangle", 3.0), ("atan", 5.0), ("sigmoid", 2.0)])
def test_fire_gradient_is_the_surrogate_density_at_the_scaled_distance(surrogate, alpha):
    """``d fire / d m = h'((m - theta) / theta) / theta``, with the neuron's ``alpha`` (not the
    default) and a threshold that is not 1."""
    from noisesnn_jax.surrogate import heaviside

    m, theta = jnp.linspace(0.5, 3.5, 13), 2.0
    n = Neuron(1.0, surrogate=surrogate, alpha=alpha)
    g = jax.grad(lambda m: neurons.fire(n, m, theta).sum())(m)
    dh = jax.grad(lambda z: heaviside(z, surrogate, alpha).sum())((m - theta) / theta)
    np.testing.assert_allclose(g, dh / theta, rtol=1e-6)
    default = jax.grad(lambda z: heaviside(z, surrogate, Neuron(surrogate=surrogate).surrogate_alpha).sum())(
        (m - theta) / theta)
    assert not np.allclose(dh, default)  # the alpha matters here


def test_run_accepts_one_neuron_over_time_and_names_a_missing_time_axis():
    """``xs`` of shape ``[T]`` is one neuron over T steps; a scalar has no time axis: one error
    naming the layout. ``run_constant`` runs ``timesteps=1`` and rejects 0 by name."""
    spikes, v = neurons.run(Neuron(1.0), np.full(4, 0.6, np.float32))
    np.testing.assert_array_equal(spikes, [0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"time-major \[T, \.\.\.\]; got a scalar"):
        neurons.run(Neuron(1.0), np.float32(0.5))
    spikes, v = neurons.run_constant(Neuron(1.0), np.array([0.6, 1.2], np.float32), 1)
    np.testing.assert_array_equal(spikes, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="timesteps=0 is invalid; it must be an integer >= 1"):
        neurons.run_constant(Neuron(1.0), np.ones(2, np.float32), 0)
