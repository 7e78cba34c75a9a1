"""Classic ANN-to-SNN conversion, the baseline: thresholds from ANN activations (max or a
percentile), and a ReLU or QCFS ANN rebuilt as a multi-step IF network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.contract import Array, SpikingModel, Variables
from noisesnn_jax.spikes import Noise


def activation_statistics(model: SpikingModel, variables: Variables, batches: list[np.ndarray],
                          percentile: float = 99.9) -> dict[str, float]:
    """Per-layer threshold from ANN activations: the ``percentile`` of each ``act{i}`` output.

    ``percentile=100`` is max-norm threshold balancing; 99.9 is the robust variant (SpikingJelly's
    ``ann2snn`` Max / 99.9%). Inference mode, over all elements of all ``batches``.

    Args:
      model: the ANN (a zoo model with ``activation="relu"``), its activations named ``act{i}``.
      variables: its trained variables.
      batches: input batches ``[B, ...]``.
      percentile: the percentile of each layer's activations, in ``(0, 100]``.

    Returns:
      ``{"act{i}": threshold}``, each at least ``1e-3``.

    Raises:
      ValueError: ``percentile`` is not in ``(0, 100]``.
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


def ann_to_snn(model: SpikingModel, variables: Variables, thresholds: dict[str, float] | None = None,
               v_init: float = 0.0) -> tuple[SpikingModel, Variables]:
    """A ReLU or QCFS ANN as a multi-step IF network with per-layer thresholds (no retraining).

    ReLU: ``thresholds`` from :func:`activation_statistics` (one per ``act{i}``). QCFS and a
    trainable clip: the trained ``lam`` is the threshold (a per-layer ``lam`` is broadcast to the
    channels). A fixed clip: the neuron's threshold. The neuron emits ``theta * s``, so its rate
    approximates ``clip(a, 0, theta)`` without rescaling weights.

    Args:
      model: a zoo model with ``activation`` ``relu``, ``qcfs`` or ``clip``.
      variables: its trained variables.
      thresholds: ``{"act{i}": theta}`` (:func:`activation_statistics`); required for ReLU,
        unused otherwise.
      v_init: the initial potential in units of the threshold (0, or 0.5 as in QCFS).

    Returns:
      ``(snn, variables)``: the model as a noiseless spiking network (``activation="spike"``,
      noise kind ``none``) with per-channel ``threshold`` params (a fixed clip keeps the
      neuron's threshold), to run with ``timesteps=T``.

    Raises:
      ValueError: a ReLU model without ``thresholds``, or another activation.
      KeyError: an ``act{i}`` layer has no conv or dense layer feeding it among the parameters.
    """

    params = dict(variables["params"])
    if model.activation == "relu":
        if thresholds is None:
            raise ValueError("a ReLU ANN needs per-layer thresholds; compute them with activation_statistics")
        for name, theta in thresholds.items():
            kernel = _layer_kernel(params, name)
            params[name] = {"neuron": {"threshold": jnp.full((kernel.shape[-1],), theta, jnp.float32)}}
    elif model.activation in ("qcfs", "clip"):
        for name, p in params.items():
            if name.startswith("act") and "threshold" in p.get("neuron", {}):
                width = _layer_kernel(params, name).shape[-1]
                params[name] = {"neuron": {"threshold": jnp.broadcast_to(p["neuron"]["threshold"], (width,))}}
    else:
        raise ValueError(f"ann_to_snn converts activation relu, qcfs or clip, not {model.activation!r}")
    learned = model.activation != "clip" or model.learn_threshold  # a fixed clip keeps the neuron's threshold
    snn = model.clone(activation="spike", learn_threshold=learned, learn_std=False,
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

