"""T=1 -> T=N conversion: batch-norm folding, jitted multi-step prediction, firing rates.

Conversion changes no weight: the multi-step network is the same model applied with
``timesteps=T`` (METHOD.md, section 4). Folding batch norm into the preceding layer is an exact
rewrite of inference-mode batch norm, ``y = gamma * (W x + b - mean) / sqrt(var + eps) + beta``::

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

after which the bias is injected as current at every time step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.models import BN_EPS

Array = jax.Array
Variables = dict[str, Any]


def fold_batchnorm(model: Any, variables: Variables) -> tuple[Any, Variables]:
    """Fold every ``bn{i}`` into its ``conv{i}``/``dense{i}``; returns ``(folded_model, variables)``.

    The folded model has ``fold_bn=True`` (layers with bias, no batch norm) and no
    ``batch_stats``; in inference it computes the same function as the original.
    """
    if not getattr(model, "batch_norm", False) or getattr(model, "fold_bn", True):
        return model, variables
    params = dict(jax.tree_util.tree_map(lambda a: a, variables["params"]))
    stats = variables.get("batch_stats", {})
    folded: dict[str, Any] = {}
    for name, sub in params.items():
        if _bn_partner(name, "bn") is not None:
            continue  # a batch norm: folded into its layer below
        for prefix in ("conv", "dense"):
            bn_name = _bn_partner(name, prefix)
            if bn_name is not None and bn_name in params:
                bn, st = params[bn_name], stats[bn_name]
                scale = bn["scale"] * jax.lax.rsqrt(st["var"] + BN_EPS)
                bias = sub.get("bias", jnp.zeros_like(bn["bias"]))
                sub = {"kernel": sub["kernel"] * scale,
                       "bias": (bias - st["mean"]) * scale + bn["bias"]}
                break
        folded[name] = sub
    out = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    out["params"] = folded
    return model.clone(fold_bn=True), out


def _bn_partner(name: str, prefix: str) -> str | None:
    """The batch norm paired with a layer: ``conv3 -> bn3``, ``convs1b0_sc -> bns1b0_sc``."""
    return "bn" + name[len(prefix):] if name.startswith(prefix) else None


@functools.partial(jax.jit, static_argnums=(0, 3))
def _predict(model: Any, variables: Variables, images: Array, timesteps: int, key: Array | None = None):
    """Logits and sown firing rates; with ``key`` (T=1) the noise is sampled from it."""
    rngs = {} if key is None else {"noise": key}
    logits, state = model.apply(variables, images, timesteps=timesteps, sample_noise=key is not None,
                                rngs=rngs, mutable=["intermediates"])
    return logits, state.get("intermediates", {})


def predict(model: Any, variables: Variables, images: Array,
            timesteps: int = 1) -> tuple[Array, dict[str, float]]:
    """Multi-step inference: ``images [B, ...] -> (logits [B, K], {layer: firing rate})``.

    At ``timesteps=1`` the noise is at its mean (the deterministic T=1 network). Jitted once per
    ``(model, timesteps, shape)``.
    """
    logits, rates = _predict(model, variables, jnp.asarray(images), int(timesteps))
    return logits, flatten_rates(rates)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _step_logits(model: Any, variables: Variables, images: Array, timesteps: int) -> Array:
    from noisesnn_jax.layers import READOUT_COLLECTION
    variables = {k: v for k, v in variables.items() if k != READOUT_COLLECTION}  # e.g. sown by init
    _, state = model.apply(variables, images, timesteps=timesteps, mutable=[READOUT_COLLECTION])
    return state[READOUT_COLLECTION]["step_logits"][0]


def step_logits(model: Any, variables: Variables, images: Array, timesteps: int) -> Array:
    """The readout of every time step of a multi-step run: ``images [B, ...] -> [T, B, K]``.

    The mean of the first ``t`` rows is the output of the same network run for ``T = t`` steps
    (see :func:`noisesnn_jax.layers.average_readout`). Jitted once per ``(model, T, shape)``.
    """
    return _step_logits(model, variables, jnp.asarray(images), int(timesteps))


def accuracy_curve(model: Any, variables: Variables, ds: Any, timesteps: Sequence[int],
                   batch_size: int = 500, max_rows: int = 8192) -> list[float]:
    """Test accuracy at every ``T`` in ``timesteps`` from one multi-step run of ``max(timesteps)``
    steps over ``ds.test_examples``: the prediction at ``T = t`` is the argmax of the first ``t``
    steps' summed logits. ``T = 1`` here is the multi-step network run for one step, which for the
    IF neuron is the deterministic T=1 network. Costs one run of the longest ``T`` instead of one
    run per ``T``."""
    ts = np.asarray(sorted(set(int(t) for t in timesteps)))
    if ts[0] < 1:
        raise ValueError(f"timesteps={list(timesteps)} is invalid; use integers >= 1")
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
    """``{"act0": {"neuron": {"firing_rate": r}}} -> {"act0": r}``."""
    flat = {}
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        names = [p.key for p in path if hasattr(p, "key")]
        layer = names[0] if names else "rate"
        flat[layer] = float(value)
    return flat


def evaluate(model: Any, variables: Variables, x: np.ndarray, y: np.ndarray, timesteps: int = 1,
             batch_size: int = 500, sample_noise_key: Array | None = None,
             max_rows: int = 8192, mesh: Any = None) -> dict[str, Any]:
    """Accuracy and mean per-layer firing rates over ``(x, y)`` at ``timesteps``.

    With ``sample_noise_key`` (T=1 only) the noise is sampled instead of set to its mean. The
    batch shrinks so that ``timesteps * batch <= max_rows`` (multi-step tensors are ``[T*B, ...]``).
    With a ``mesh`` of several devices the batch is sharded over its ``data`` axis (see
    :func:`evaluate_examples`).
    """
    x, y = np.asarray(x), np.asarray(y)
    return evaluate_examples(model, variables, lambda idx: (x[idx], y[idx]), len(y), timesteps,
                             batch_size, sample_noise_key, max_rows, mesh)


def evaluate_dataset(model: Any, variables: Variables, ds: Any, timesteps: int = 1, batch_size: int = 500,
                     sample_noise_key: Array | None = None, max_rows: int = 8192,
                     mesh: Any = None) -> dict[str, Any]:
    """:func:`evaluate` over the test split of a dataset (``ds.test_examples``); each process
    loads only its rows of each batch."""
    return evaluate_examples(model, variables, ds.test_examples, ds.num_test, timesteps, batch_size,
                             sample_noise_key, max_rows, mesh)


def evaluate_examples(model: Any, variables: Variables, fetch, n: int, timesteps: int = 1,
                      batch_size: int = 500, sample_noise_key: Array | None = None,
                      max_rows: int = 8192, mesh: Any = None) -> dict[str, Any]:
    """Accuracy and firing rates over examples ``fetch(indices) -> (x, y)``, ``indices < n``.

    On one device, consecutive batches (the last one smaller). On a mesh of several devices
    (every process calls this), each global batch is ``per_device * devices`` rows, sharded over
    ``data``; every device runs the model on its own rows (``shard_map``: no communication until
    the counts are summed), so multi-step tensors stay ``[T*B_local, ...]`` per device. The last
    batch is rounded up to a multiple of the device count by repeating the last example; the
    repeats are masked out of the accuracy (the firing rates include those fewer than ``devices``
    repeats). With ``sample_noise_key`` each device draws its own noise, so the sampled-noise
    accuracy depends on the device count (the mean-noise and multi-step results do not).
    """
    timesteps = 1 if sample_noise_key is not None else int(timesteps)
    if n <= 0:
        raise ValueError("nothing to evaluate: the split has no examples")
    devices = 1 if mesh is None else int(mesh.devices.size)
    correct, rates_sum = 0, {}
    if devices == 1:
        bs = max(1, min(batch_size, max_rows // timesteps))
        for start in range(0, n, bs):
            idx = np.arange(start, min(n, start + bs))
            xb, yb = fetch(idx)
            key = None if sample_noise_key is None else jax.random.fold_in(sample_noise_key, start)
            logits, rates = _predict(model, variables, jnp.asarray(xb), timesteps, key)
            correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(yb)))
            for k, r in flatten_rates(rates).items():
                rates_sum[k] = rates_sum.get(k, 0.0) + r * len(idx)
    else:
        from noisesnn_jax import parallel
        per_device = max(1, min(-(-batch_size // devices), max_rows // timesteps))
        bs = per_device * devices
        fn = _sharded_eval(model, timesteps, mesh, sample_noise_key is not None)
        variables = parallel.replicate(mesh, variables)
        base_key = jax.random.key(0) if sample_noise_key is None else sample_noise_key
        for start in range(0, n, bs):
            size = min(bs, -(-(n - start) // devices) * devices)  # the last batch: under `devices` pad rows
            idx = np.arange(start, start + size)
            valid = idx < n
            rows = parallel.process_slice(size)
            xb, yb = fetch(np.minimum(idx, n - 1)[rows])
            c, rates = fn(variables, parallel.global_batch(mesh, xb), parallel.global_batch(mesh, yb),
                          parallel.global_batch(mesh, valid[rows]), jax.random.fold_in(base_key, start))
            correct += int(c)
            for k, r in flatten_rates(rates).items():
                rates_sum[k] = rates_sum.get(k, 0.0) + r * int(valid.sum())
    return {"accuracy": correct / n, "correct": correct, "total": n,
            "firing_rates": {k: v / n for k, v in rates_sum.items()}}


@functools.lru_cache(maxsize=64)
def _sharded_eval(model: Any, timesteps: int, mesh: Any, sampled: bool):
    """Jitted ``(variables, x, y, valid, key) -> (correct, rates)`` with the batch sharded on ``data``."""
    from jax.sharding import PartitionSpec as P

    from noisesnn_jax.parallel import DATA_AXIS

    def local(variables, x, y, valid, key):
        rngs = {"noise": jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))} if sampled else {}
        logits, state = model.apply(variables, x, timesteps=timesteps, sample_noise=sampled, rngs=rngs,
                                    mutable=["intermediates"])
        hits = jnp.sum(jnp.logical_and(jnp.argmax(logits, -1) == y, valid).astype(jnp.int32))
        rates = jax.lax.pmean(state.get("intermediates", {}), DATA_AXIS)
        return jax.lax.psum(hits, DATA_AXIS), rates

    data = P(DATA_AXIS)
    # check_vma=False: the neurons' scans start from a constant (unvarying) potential.
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), data, data, data, P()), out_specs=(P(), P()),
                                 check_vma=False))


# ----------------------------------------------------------------------------- ANN -> SNN baselines

def activation_statistics(model: Any, variables: Variables, batches: list[np.ndarray],
                          percentile: float = 99.9) -> dict[str, float]:
    """Per-layer threshold from ANN activations: the ``percentile`` of each ``act{i}`` output.

    ``percentile=100`` is max-norm threshold balancing; 99.9 is the robust variant (SpikingJelly's
    ``ann2snn`` Max / 99.9%). Inference mode, over all elements of all ``batches``.
    """
    from noisesnn_jax.layers import Activation

    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile!r} is invalid; use a value in (0, 100]")

    @jax.jit
    def acts(v, x):
        _, state = model.apply(v, x, capture_intermediates=lambda m, _: isinstance(m, Activation),
                               mutable=["intermediates"])
        return {k: val["__call__"][0] for k, val in state["intermediates"].items()
                if isinstance(val, dict) and "__call__" in val}

    collected: dict[str, list[np.ndarray]] = {}
    for xb in batches:
        for k, a in acts(variables, jnp.asarray(xb)).items():
            collected.setdefault(k, []).append(np.asarray(a, np.float32).ravel())
    out = {}
    for k in collected:
        values = np.concatenate(collected[k])
        out[k] = max(float(np.percentile(values, percentile)), 1e-3)
    return out


def ann_to_snn(model: Any, variables: Variables, thresholds: dict[str, float] | None = None,
               v_init: float = 0.0) -> tuple[Any, Variables]:
    """A ReLU or QCFS ANN as a multi-step IF network with per-layer thresholds (no retraining).

    ReLU: ``thresholds`` from :func:`activation_statistics` (one per ``act{i}``). QCFS: the
    trained clip ``lam`` is the threshold. The neuron emits ``theta * s``, so its rate
    approximates ``clip(a, 0, theta)`` without rescaling weights. ``v_init`` is in units of the
    threshold (0, or 0.5 as in QCFS).
    """
    from noisesnn_jax.spikes import Noise

    params = dict(variables["params"])
    if model.activation == "relu":
        if thresholds is None:
            raise ValueError("a ReLU ANN needs per-layer thresholds; compute them with activation_statistics")
        for name, theta in thresholds.items():
            kernel = _layer_kernel(params, name)
            params[name] = {"neuron": {"threshold": jnp.full((kernel.shape[-1],), theta, jnp.float32)}}
    elif model.activation != "qcfs":
        raise ValueError(f"ann_to_snn converts activation relu or qcfs, not {model.activation!r}")
    snn = model.clone(activation="spike", learn_threshold=True, learn_std=False,
                      noise=Noise("none", mean=float(v_init)))
    return snn, {**variables, "params": params}


def _layer_kernel(params: dict, act_name: str) -> Array:
    """The kernel of the layer feeding ``act_name``: ``act3 -> conv3``; a residual block's
    ``acts1b0_out`` is fed by the block's last conv (``convs1b0_b``, or ``_c`` in a bottleneck)."""
    suffix = act_name[len("act"):]
    if suffix.endswith("_out"):
        block = suffix[:-len("out")]
        convs = sorted(k for k in params if k.startswith("conv" + block) and not k.endswith("_sc"))
        if convs:
            return params[convs[-1]]["kernel"]
    for p in ("conv", "dense"):
        if p + suffix in params:
            return params[p + suffix]["kernel"]
    raise KeyError(f"no layer feeding {act_name} among the model's parameters")


# ----------------------------------------------------------------------------- operation counts

# Energy per operation at 45 nm (Horowitz, ISSCC 2014), 32-bit float: accumulate and
# multiply-accumulate, the constants SNN papers use.
ENERGY_AC_PJ = 0.9
ENERGY_MAC_PJ = 4.6


def connections(module: Any, a: Array) -> Array:
    """Synaptic events of a conv/dense ``module`` on input ``a``: the number of
    (input element, output element) connections whose input is nonzero, summed over the batch.

    With ``a`` all ones this is the layer's multiply-accumulate count (borders and strides exact).
    """
    import flax.linen as nn

    mask = (a != 0).astype(jnp.float32)
    if isinstance(module, nn.Dense):
        return jnp.sum(mask) * module.features
    kh, kw = module.kernel_size
    ones = jnp.ones((kh, kw, a.shape[-1], 1), jnp.float32)
    strides = module.strides or (1, 1)
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    reach = jax.lax.conv_general_dilated(mask, ones, strides, module.padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(reach) * module.features


def count_ops(model: Any, variables: Variables, images: Array, timesteps: int = 1) -> dict[str, Any]:
    """Operations per image: synaptic operations (accumulates) of the SNN at ``timesteps`` against
    the multiply-accumulates of the same network as an ANN, and the energy estimate.

    The first synaptic layer sees the analog image: MACs, once (its current is reused at every
    step). Every later layer sees spikes: one accumulate per nonzero input per connection, summed
    over the ``T`` steps. Energy: ``0.9 pJ`` per accumulate, ``4.6 pJ`` per MAC (45 nm,
    Horowitz 2014); neuron updates and memory traffic are not counted.
    """
    import flax.linen as nn

    records: list[tuple[str, Any, Array]] = []

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, (nn.Conv, nn.Dense)):
            records.append((mod.name, mod, args[0]))
        return next_fun(*args, **kwargs)

    images = jnp.asarray(images)
    batch = images.shape[0]
    if getattr(model, "remat", False):  # no tracing transform around the layers we record
        model = model.clone(remat=False)
    with nn.intercept_methods(interceptor):
        model.apply(variables, images, timesteps=timesteps)
    layers, total_sops, first_macs, ann_macs = {}, 0.0, 0.0, 0.0
    for i, (name, mod, a) in enumerate(records):
        macs = float(connections(mod, jnp.ones_like(a[:1])))
        ann_macs += macs
        if i == 0:
            first_macs = macs
            layers[name] = {"macs": macs, "sops": 0.0}
        else:
            sops = float(connections(mod, a)) / batch
            total_sops += sops
            layers[name] = {"macs": macs, "sops": sops}
    snn_pj = ENERGY_MAC_PJ * first_macs + ENERGY_AC_PJ * total_sops
    ann_pj = ENERGY_MAC_PJ * ann_macs
    return {"timesteps": int(timesteps), "images": int(batch), "layers": layers, "sops": total_sops,
            "first_layer_macs": first_macs, "ann_macs": ann_macs, "snn_energy_uj": snn_pj * 1e-6,
            "ann_energy_uj": ann_pj * 1e-6, "energy_ratio": snn_pj / ann_pj if ann_pj else float("nan"),
            "constants": {"ac_pj": ENERGY_AC_PJ, "mac_pj": ENERGY_MAC_PJ, "node": "45 nm (Horowitz 2014)"}}
