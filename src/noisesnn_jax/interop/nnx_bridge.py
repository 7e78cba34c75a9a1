"""Flax NNX: this library's Linen models as NNX modules, through Flax's own bridge.

There are no NNX twins of the layers: ``flax.nnx.bridge.ToNNX`` wraps any Linen model of this
library (the zoo's, or a user's own that follows the model contract) into an ``nnx.Module`` whose
state *is* the Linen model's variables, so both APIs run one implementation and cannot drift apart.
The wrapped model takes the same keywords; batch norm updates its statistics when called with
``mutable=["batch_stats"]``, and the T=1 noise is drawn from the ``noise`` stream of its
``nnx.Rngs``::

    from flax import nnx
    net = nnx_bridge.to_nnx(models.CNN(), x, rngs=nnx.Rngs(params=0, noise=1))
    logits = net(x, train=True, mutable=["batch_stats"])   # T=1 training step, noise sampled
    logits = net(x, timesteps=8)                           # the multi-step network

It works under ``nnx.jit``, ``nnx.grad`` and ``nnx.Optimizer``; :func:`linen_variables` gives
back the Linen variables (for evaluation, checkpoints, export).
"""

from __future__ import annotations

import jax
from flax import nnx
from flax.nnx import bridge

from noisesnn_jax.contract import Array, SpikingModel, Variables

COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def to_nnx(model: SpikingModel, example: Array, *, rngs: nnx.Rngs, variables: Variables | None = None) -> bridge.ToNNX:
    """``model`` (a Linen module) as an NNX module.

    Args:
      model: the Linen model (:class:`~noisesnn_jax.contract.SpikingModel`).
      example: an input batch ``[B, ...]`` to initialize it on.
      rngs: the NNX random streams: ``params``, and ``noise`` for training.
      variables: Linen variables ``{"params": ..., "batch_stats": ...}`` to hold instead of the
        initial ones (e.g. a trained run's); ``None`` keeps the initialization.

    Returns:
      The wrapped model, called like the Linen one (``net(x, timesteps=8)``).

    Raises:
      ValueError: ``variables`` names a variable the model lacks, or one of another shape.
    """
    net = bridge.ToNNX(model, rngs=rngs)
    bridge.lazy_init(net, example)
    if variables is not None:
        state = nnx.state(net)
        pure = nnx.to_pure_dict(state)
        merged = _merge(pure, {c: v for c, v in variables.items() if c in COLLECTIONS})
        nnx.replace_by_pure_dict(state, merged)
        nnx.update(net, state)
    return net


def _merge(pure: dict, variables: Variables) -> dict:
    """Linen collections written into NNX's per-module pure dict (module path -> variable name)."""
    out = jax.tree_util.tree_map(lambda a: a, pure)
    for collection, tree in variables.items():
        flat = {path: leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
        for path, leaf in flat.items():
            keys = [p.key for p in path]
            node = out
            for k in keys[:-1]:
                if k not in node:
                    raise ValueError(f"{collection}/{'/'.join(keys)} is not a variable of this model")
                node = node[k]
            if keys[-1] not in node:
                raise ValueError(f"{collection}/{'/'.join(keys)} is not a variable of this model")
            if getattr(node[keys[-1]], "shape", None) != getattr(leaf, "shape", None):
                raise ValueError(f"{collection}/{'/'.join(keys)} has shape {leaf.shape}, the model's is "
                                 f"{node[keys[-1]].shape}")
            node[keys[-1]] = leaf
    return out


def linen_variables(net: bridge.ToNNX) -> Variables:
    """The Linen variables of a wrapped model.

    Args:
      net: a model wrapped by :func:`to_nnx`.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (the collections it has).
    """
    out = {}
    for collection, kind in COLLECTIONS.items():
        tree = nnx.to_pure_dict(nnx.state(net, kind))
        if tree:
            out[collection] = tree
    return out
