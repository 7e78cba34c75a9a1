"""Inference and evaluation: multi-step prediction, per-step readout, accuracy over a test split
(sharded over a mesh), and accuracy at every T from one run. The evaluation of a training workdir
is :func:`noisesnn_jax.run.workdir.evaluate_run`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.contract import Array, SpikingModel, Variables, check_inputs, check_logits, check_timesteps
from noisesnn_jax.pieces import microbatch_size

if TYPE_CHECKING:
    from jax.sharding import Mesh


def _forward(model: Any, variables: Variables, images: Array, timesteps: int, *, noise: Array | None = None,
             microbatch: int = 0) -> tuple[Array, Any]:
    """Logits and sown firing rates, the batch run in pieces of ``microbatch`` images (``lax.map``,
    then the remainder); the rates are the means over the whole batch. With a ``noise`` key the
    noise is sampled from it, the batch whole."""
    rngs, sampled = ({"noise": noise}, True) if noise is not None else ({}, False)
    microbatch = 0 if sampled else microbatch

    batch = images.shape[0]

    def run(x):
        logits, state = model.apply(variables, x, timesteps=timesteps, sample_noise=sampled, rngs=rngs,
                                    mutable=["intermediates"])
        check_logits(model, logits, x.shape[0], timesteps,
                     "" if x.shape[0] == batch else f" (a piece of the batch of {batch} images)")
        return logits, state.get("intermediates", {})

    pieces = batch // microbatch if 0 < microbatch < batch else 0
    if pieces <= 1:
        return run(images)
    head = pieces * microbatch
    logits, rates = jax.lax.map(run, images[:head].reshape((pieces, microbatch) + images.shape[1:]))
    logits = logits.reshape((head,) + logits.shape[2:])
    rates = jax.tree.map(lambda r: r.mean(axis=0), rates)
    if head < batch:
        tail_logits, tail_rates = run(images[head:])
        logits = jnp.concatenate([logits, tail_logits])
        rates = jax.tree.map(lambda a, b: (a * head + b * (batch - head)) / batch, rates, tail_rates)
    return logits, rates


@functools.partial(jax.jit, static_argnums=(0, 3, 5))
def _predict(model: Any, variables: Variables, images: Array, timesteps: int, key: Array | None = None,
             microbatch: int = 0):
    """Logits and sown firing rates; with ``key`` (T=1) the noise is sampled from it (whole batch)."""
    return _forward(model, variables, images, timesteps, noise=key, microbatch=microbatch)


def predict(model: SpikingModel, variables: Variables, images: Array, timesteps: int = 1, *,
            microbatch: int | None = None) -> tuple[Array, dict[str, float]]:
    """Multi-step inference: ``images [B, ...] -> (logits [B, K], {layer: firing rate})``.

    At ``timesteps=1`` the noise is at its mean (the deterministic T=1 network). Jitted once per
    ``(model, timesteps, shape)``. ``model`` follows :class:`noisesnn_jax.contract.SpikingModel`.
    ``microbatch``: images per piece of the batch (default :func:`noisesnn_jax.pieces.microbatch_size`: cache-sized
    pieces on a CPU, the whole batch elsewhere); the logits do not depend on it.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      images: the batch ``[B, ...]`` (a jax or numpy array of finite floats).
      timesteps: ``T``; 1 is the deterministic T=1 network.
      microbatch: images per piece; ``None`` sizes the pieces to the cache.

    Returns:
      ``(logits [B, K], {layer: mean firing rate})``.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``timesteps`` or ``images``, or a model whose output is not
        ``[B, K]`` (:func:`noisesnn_jax.contract.check_inputs`).
    """
    logits, rates = infer(model, variables, images, timesteps, microbatch=microbatch, rates=True)
    return logits, flatten_rates(rates)


def infer(model: SpikingModel, variables: Variables, images: Array, timesteps: int = 1, *,
          microbatch: int | None = None, rates: bool = False) -> Array | tuple[Array, dict[str, Any]]:
    """:func:`predict`'s logits as a device array, without reading the firing rates back to the host:
    the call to time or to chain.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      images: the batch ``[B, ...]``.
      timesteps: ``T``.
      microbatch: images per piece; ``None`` sizes the pieces to the cache.
      rates: also return the sown firing rates.

    Returns:
      ``logits [B, K]``; with ``rates``, ``(logits, rates)`` where ``rates`` is the model's
      ``intermediates`` collection (a nested dict of scalar arrays, :func:`flatten_rates`).

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``timesteps`` or ``images``, or a model whose output is not ``[B, K]``.
    """
    timesteps = check_inputs(model, variables, images, timesteps)
    images = jnp.asarray(images)
    if microbatch is None:
        microbatch = microbatch_size(model, variables, images, timesteps)
    out = _predict(model, variables, images, int(timesteps), None, int(microbatch))
    return out if rates else out[0]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _step_logits(model: Any, variables: Variables, images: Array, timesteps: int) -> Array:
    from noisesnn_jax.layers import READOUT_COLLECTION
    variables = {k: v for k, v in variables.items() if k != READOUT_COLLECTION}  # e.g. sown by init
    logits, state = model.apply(variables, images, timesteps=timesteps, mutable=[READOUT_COLLECTION])
    check_logits(model, logits, images.shape[0], timesteps)
    steps = state.get(READOUT_COLLECTION, {}).get("step_logits")
    if not steps or steps[-1].shape != (timesteps,) + logits.shape:
        raise ValueError(f"{type(model).__name__} does not sow its per-step readout [T, B, K]; end the model with "
                         f"layers.average_readout(self, logits, timesteps)")
    return steps[-1]


def step_logits(model: SpikingModel, variables: Variables, images: Array, timesteps: int) -> Array:
    """The readout of every time step of a multi-step run: ``images [B, ...] -> [T, B, K]``.

    The mean of the first ``t`` rows is the output of the same network run for ``T = t`` steps
    (see :func:`noisesnn_jax.layers.average_readout`). Jitted once per ``(model, T, shape)``.

    Args:
      model: the model; it must end with :func:`noisesnn_jax.layers.average_readout`.
      variables: its variables.
      images: the batch ``[B, ...]``.
      timesteps: ``T``.

    Returns:
      The per-step logits ``[T, B, K]``.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``timesteps`` or ``images``, a model whose output is not ``[B, K]``,
        or a model that does not sow its per-step readout.
    """
    timesteps = check_inputs(model, variables, images, timesteps)
    return _step_logits(model, variables, jnp.asarray(images), timesteps)


def accuracy_curve(model: SpikingModel, variables: Variables, ds: Any, timesteps: Sequence[int],
                   batch_size: int = 500, max_rows: int = 8192) -> list[float]:
    """Test accuracy at every ``T`` in ``timesteps`` from one multi-step run of ``max(timesteps)``.

    The run goes over ``ds.test_examples(range(ds.num_test))`` (``ds`` follows
    :class:`noisesnn_jax.data.Dataset`; only ``num_test`` and ``test_examples`` are read). The
    prediction at ``T = t`` is the argmax of the first ``t`` steps' summed logits; ``T = 1`` is
    the multi-step network run for one step, which for the IF neuron is the deterministic T=1
    network. Costs one run of the longest ``T`` instead of one run per ``T``.

    Args:
      model: the model; it must end with :func:`noisesnn_jax.layers.average_readout`.
      variables: its variables.
      ds: any object with ``num_test`` and ``test_examples(indices) -> (x, y)`` (a dataset of
        :mod:`noisesnn_jax.data`, which the core does not import).
      timesteps: the ``T`` to score, each an integer >= 1.
      batch_size: images per batch, at most.
      max_rows: the batch shrinks so that ``max(timesteps) * batch <= max_rows``.

    Returns:
      The test accuracy at each ``T`` of ``timesteps``, in their order.

    Raises:
      ValueError: ``timesteps`` is empty or holds an invalid entry, or as :func:`step_logits`.
    """
    if not len(timesteps):
        raise ValueError("timesteps=[] is invalid; pass the T to evaluate, e.g. (1, 2, 4, 8)")
    ts = np.asarray(sorted(set(check_timesteps(t, "timesteps entry") for t in timesteps)))
    longest = int(ts[-1])
    bs = max(1, min(batch_size, max_rows // longest))
    correct = np.zeros(len(ts), np.int64)
    for start in range(0, ds.num_test, bs):
        xb, yb = ds.test_examples(np.arange(start, min(ds.num_test, start + bs)))
        prefix = jnp.cumsum(step_logits(model, variables, xb, longest), axis=0)[ts - 1]  # [len(ts), B, K]
        correct += np.asarray(jnp.sum(jnp.argmax(prefix, -1) == jnp.asarray(yb), axis=-1))
    by_t = dict(zip(ts.tolist(), (correct / ds.num_test).tolist()))
    return [by_t[int(t)] for t in timesteps]


def flatten_rates(tree: Any) -> dict[str, float]:
    """``{"act0": {"neuron": {"firing_rate": r}}} -> {"act0": r}``.

    Args:
      tree: the sown ``intermediates`` collection, any pytree of scalars keyed by layer names.

    Returns:
      The rate of each top-level layer as a float.
    """
    flat = {}
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        names = [p.key for p in path if hasattr(p, "key")]
        layer = names[0] if names else "rate"
        flat[layer] = float(value)
    return flat


def evaluate(model: SpikingModel, variables: Variables, x: np.ndarray, y: np.ndarray, timesteps: int = 1, *,
             batch_size: int = 500, sample_noise_key: Array | None = None,
             max_rows: int = 8192, mesh: Mesh | None = None) -> dict[str, Any]:
    """Accuracy and mean per-layer firing rates over ``(x, y)`` at ``timesteps``.

    With ``sample_noise_key`` (T=1 only; another T is an error) the noise is sampled instead of
    set to its mean. The batch shrinks so that ``timesteps * batch <= max_rows`` (multi-step
    tensors are ``[T, B, ...]``). Every batch passes :func:`noisesnn_jax.contract.check_inputs`.
    With a ``mesh`` of several devices the batch is sharded over its ``data`` axis (see
    :func:`evaluate_examples`).

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      x: the examples ``[N, ...]``.
      y: their integer labels ``[N]``.
      timesteps: ``T``.
      batch_size: examples per batch, at most.
      sample_noise_key: sample the T=1 noise from this key; ``None`` holds it at its mean.
      max_rows: the batch shrinks so that ``timesteps * batch <= max_rows``.
      mesh: a data mesh (:func:`noisesnn_jax.parallel.make_mesh`); ``None`` runs on one device.

    Returns:
      ``{"accuracy", "correct", "total", "firing_rates": {layer: mean rate}}``.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: as :func:`evaluate_examples`.
    """
    x, y = np.asarray(x), np.asarray(y)
    return evaluate_examples(model, variables, lambda idx: (x[idx], y[idx]), len(y), timesteps, batch_size=batch_size,
                             sample_noise_key=sample_noise_key, max_rows=max_rows, mesh=mesh)


def evaluate_dataset(model: SpikingModel, variables: Variables, ds: Any, timesteps: int = 1, *, batch_size: int = 500,
                     sample_noise_key: Array | None = None, max_rows: int = 8192,
                     mesh: Mesh | None = None) -> dict[str, Any]:
    """:func:`evaluate` over the test split of a dataset (``ds.test_examples``); each process
    loads only its rows of each batch.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      ds: any object with ``num_test`` and ``test_examples(indices) -> (x, y)`` (a dataset of
        :mod:`noisesnn_jax.data`).
      timesteps: ``T``.
      batch_size: examples per batch, at most.
      sample_noise_key: sample the T=1 noise from this key; ``None`` holds it at its mean.
      max_rows: the batch shrinks so that ``timesteps * batch <= max_rows``.
      mesh: a data mesh; ``None`` runs on one device.

    Returns:
      As :func:`evaluate`.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: as :func:`evaluate_examples`.
    """
    return evaluate_examples(model, variables, ds.test_examples, ds.num_test, timesteps, batch_size=batch_size,
                             sample_noise_key=sample_noise_key, max_rows=max_rows, mesh=mesh)


def evaluate_examples(model: SpikingModel, variables: Variables,
                      fetch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], n: int, timesteps: int = 1, *,
                      batch_size: int = 500, sample_noise_key: Array | None = None,
                      max_rows: int = 8192, mesh: Mesh | None = None) -> dict[str, Any]:
    """Accuracy and firing rates over examples ``fetch(indices) -> (x, y)``, ``indices < n``.

    On one device, consecutive batches (the last one smaller). On a mesh of several devices
    (every process calls this), each global batch is ``per_device * devices`` rows, sharded over
    ``data``; every device runs the model on its own rows (``shard_map``: no communication until
    the counts are summed), so multi-step tensors stay ``[T, B_local, ...]`` per device. The last
    batch is rounded up to a multiple of the device count by repeating the last example; the
    repeats are masked out of the accuracy (the firing rates include those fewer than ``devices``
    repeats). With ``sample_noise_key`` each device draws its own noise, so the sampled-noise
    accuracy depends on the device count (the mean-noise and multi-step results do not).

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      fetch: ``indices [b] -> (x [b, ...], y [b])``.
      n: the number of examples.
      timesteps: ``T``.
      batch_size: examples per (global) batch, at most.
      sample_noise_key: sample the T=1 noise from this key; ``None`` holds it at its mean.
      max_rows: the batch (per device on a mesh) shrinks so that ``timesteps * batch <= max_rows``.
      mesh: a data mesh; ``None`` runs on one device.

    Returns:
      ``{"accuracy", "correct", "total", "firing_rates": {layer: mean rate}}``.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``timesteps``, ``sample_noise_key`` with ``timesteps != 1``, ``n <= 0``,
        invalid examples or a model whose output is not ``[B, K]``
        (:func:`noisesnn_jax.contract.check_inputs`), or a batch not divisible by the processes.
    """
    timesteps = check_timesteps(timesteps)
    if sample_noise_key is not None and timesteps != 1:
        raise ValueError(f"sample_noise_key applies to the T=1 network only (timesteps={timesteps}); pass "
                         f"timesteps=1 to sample the noise, or no key")
    if n <= 0:
        raise ValueError("nothing to evaluate: the split has no examples")
    devices = 1 if mesh is None else int(mesh.devices.size)
    correct, rates_sum = 0, {}
    if devices == 1:
        bs = max(1, min(batch_size, max_rows // timesteps))
        for start in range(0, n, bs):
            idx = np.arange(start, min(n, start + bs))
            xb, yb = fetch(idx)
            check_inputs(model, variables, xb, timesteps, sample_noise=sample_noise_key is not None)
            key = None if sample_noise_key is None else jax.random.fold_in(sample_noise_key, start)
            xb = jnp.asarray(xb)
            logits, rates = _predict(model, variables, xb, timesteps, key,
                                     microbatch_size(model, variables, xb, timesteps))
            correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(yb)))
            for k, r in flatten_rates(rates).items():
                rates_sum[k] = rates_sum.get(k, 0.0) + r * len(idx)
    else:
        from noisesnn_jax import parallel
        per_device = max(1, min(-(-batch_size // devices), max_rows // timesteps))
        bs = per_device * devices
        fn = None
        variables = parallel.replicate(mesh, variables)
        base_key = jax.random.key(0) if sample_noise_key is None else sample_noise_key
        for start in range(0, n, bs):
            size = min(bs, -(-(n - start) // devices) * devices)  # the last batch: under `devices` pad rows
            idx = np.arange(start, start + size)
            valid = idx < n
            rows = parallel.process_slice(size)
            xb, yb = fetch(np.minimum(idx, n - 1)[rows])
            check_inputs(model, variables, xb, timesteps, sample_noise=sample_noise_key is not None)
            if fn is None:  # pieces sized for one device's rows
                chunk = microbatch_size(model, variables, np.asarray(xb)[:per_device], timesteps)
                fn = _sharded_eval(model, timesteps, mesh, sample_noise_key is not None, chunk)
            c, rates = fn(variables, parallel.global_batch(mesh, xb), parallel.global_batch(mesh, yb),
                          parallel.global_batch(mesh, valid[rows]), jax.random.fold_in(base_key, start))
            correct += int(c)
            for k, r in flatten_rates(rates).items():
                rates_sum[k] = rates_sum.get(k, 0.0) + r * int(valid.sum())
    return {"accuracy": correct / n, "correct": correct, "total": n,
            "firing_rates": {k: v / n for k, v in rates_sum.items()}}


@functools.lru_cache(maxsize=64)
def _sharded_eval(model: Any, timesteps: int, mesh: Any, sampled: bool, microbatch: int = 0):
    """Jitted ``(variables, x, y, valid, key) -> (correct, rates)`` with the batch sharded on ``data``;
    each device runs its rows in pieces of ``microbatch`` images (the whole when sampling noise)."""
    from jax.sharding import PartitionSpec as P

    from noisesnn_jax.parallel import DATA_AXIS

    def local(variables, x, y, valid, key):
        noise = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS)) if sampled else None
        logits, rates = _forward(model, variables, x, timesteps, noise=noise, microbatch=microbatch)
        hits = jnp.sum(jnp.logical_and(jnp.argmax(logits, -1) == y, valid).astype(jnp.int32))
        rates = jax.lax.pmean(rates, DATA_AXIS)
        return jax.lax.psum(hits, DATA_AXIS), rates

    data = P(DATA_AXIS)
    # check_vma=False: the neurons' scans start from a constant (unvarying) potential.
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), data, data, data, P()), out_specs=(P(), P()),
                                 check_vma=False))
