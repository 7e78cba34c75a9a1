"""T=1 -> T=N conversion: batch-norm folding (prediction and evaluation: :mod:`noisesnn_jax.evaluate`).

Conversion changes no weight: the multi-step network is the same model applied with
``timesteps=T`` (docs/method.md, section 4). Folding batch norm into the preceding layer is an exact
rewrite of inference-mode batch norm, ``y = gamma * (W x + b - mean) / sqrt(var + eps) + beta``::

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

after which the bias is injected as current at every time step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from noisesnn_jax import tracing
from noisesnn_jax.contract import Array, SpikingModel, Variables

if TYPE_CHECKING:
    import flax.linen as nn


def batchnorm_pairs(model: SpikingModel, variables: Variables,
                    example: Array) -> dict[tuple[str, ...], tuple[nn.BatchNorm, tuple[str, ...]]]:
    """Which layer each batch norm normalizes, found by tracing the network, not by names.

    Traces the model once in inference mode (abstractly, :func:`noisesnn_jax.tracing.trace`) on
    ``example`` ``[B, ...]``. A batch norm whose input is exactly the output of a conv or dense
    layer is paired with it.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      example: an input batch ``[B, ...]``, or its ``jax.ShapeDtypeStruct`` (only the shape and
        dtype are used).

    Returns:
      ``{layer_path: (batch_norm_module, batch_norm_path)}``: the bound ``nn.BatchNorm`` that
      follows each conv/dense layer, module paths as tuples of names.

    Raises:
      ValueError: a batch norm whose input is not a conv/dense output (after an addition, say),
        which folding cannot absorb; the message names it.
    """
    graph = tracing.trace(model, variables, example, abstract=True)
    pairs: dict[tuple[str, ...], tuple[nn.BatchNorm, tuple[str, ...]]] = {}
    unpaired: list[str] = []
    for node in graph.nodes:
        if node.op == "batch_norm":
            layer = graph.source(node)
            if layer is None or layer.op not in ("conv", "dense"):
                unpaired.append("/".join(node.path))
            else:
                pairs[layer.path] = (node.module, node.path)
    if unpaired:
        raise ValueError(f"batch norm {', '.join(unpaired)} of {type(model).__name__} does not follow a conv or "
                         f"dense layer directly, so it cannot be folded; evaluate the model unfolded "
                         f"(it computes the same function)")
    return pairs


def fold_batchnorm(model: SpikingModel, variables: Variables, example: Array) -> tuple[SpikingModel, Variables]:
    """Fold each batch norm into the conv/dense layer that feeds it: ``(folded_model, variables)``.

    Pairs come from tracing the network on ``example`` (:func:`batchnorm_pairs`), so any model
    works whose batch norms directly follow a conv or dense layer. The folded model is
    ``model.clone(fold_bn=True)``: the model contract for folding is a ``fold_bn`` field that gives
    those layers a bias and skips the batch norms (the zoo's models have it). It has no
    ``batch_stats`` and in inference computes the same function as the original up to float32
    rounding: the folded currents differ from the unfolded ones by about ``1e-6`` relative, which a
    spiking layer turns into a different spike wherever a potential lies that close to its
    threshold. Logits can then move by more than rounding (up to 0.09 was seen on a
    Fashion-MNIST CNN at T=8) while predictions stayed the same there. The tests check the logits of
    the zoo's small models to within 1e-4. A model without batch norm is returned as it is.

    Args:
      model: the model, with a ``fold_bn`` field if it has batch norm.
      variables: its trained variables, with ``batch_stats``.
      example: an input batch ``[B, ...]``, or its ``jax.ShapeDtypeStruct`` (only the shape and
        dtype are used).

    Returns:
      ``(folded_model, folded_variables)``; ``(model, variables)`` unchanged when the model is
      already folded or has no ``batch_stats``.

    Raises:
      ValueError: the model has batch norm but no ``fold_bn`` field, a batch norm cannot be
        folded, or the folded variables do not fit the folded model; each names the fix.
    """
    from flax import traverse_util

    if getattr(model, "fold_bn", False) or not variables.get("batch_stats"):
        return model, variables
    pairs = batchnorm_pairs(model, variables, example)
    name = type(model).__name__
    if "fold_bn" not in getattr(model, "__dataclass_fields__", {}):
        raise ValueError(f"{name} has batch norm but no fold_bn field, so it cannot be rebuilt folded; give it "
                         f"a fold_bn field (True: layers followed by batch norm get a bias, the batch norms are "
                         f"skipped) or evaluate it unfolded (it computes the same function)")
    params = traverse_util.flatten_dict(variables["params"])
    stats = traverse_util.flatten_dict(variables["batch_stats"])
    folded = dict(params)
    for layer, (bn, bn_path) in pairs.items():
        scale = jax.lax.rsqrt(stats[bn_path + ("var",)] + bn.epsilon)
        if bn.use_scale:
            scale = scale * params[bn_path + ("scale",)]
        shift = params[bn_path + ("bias",)] if bn.use_bias else 0.0
        bias = params.get(layer + ("bias",), 0.0)
        folded[layer + ("kernel",)] = params[layer + ("kernel",)] * scale
        folded[layer + ("bias",)] = (bias - stats[bn_path + ("mean",)]) * scale + shift
        for key in ("scale", "bias"):
            folded.pop(bn_path + (key,), None)
    out = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    out["params"] = traverse_util.unflatten_dict(folded)
    folded_model = model.clone(fold_bn=True)
    want = jax.eval_shape(lambda x: folded_model.init(jax.random.key(0), x), tracing.example_spec(example))
    want_params = jax.tree_util.tree_map(lambda a: a.shape, want["params"])
    got_params = jax.tree_util.tree_map(jnp.shape, out["params"])
    if want_params != got_params or want.get("batch_stats"):
        raise ValueError(f"{name}(fold_bn=True) does not have the folded parameters (each batch norm's layer with "
                         f"a bias, no batch norm): its fold_bn field does not fold the batch norms found by "
                         f"tracing; evaluate it unfolded")
    return folded_model, out

