"""The model contract: what prediction, evaluation, operation counting and conversion rely on.

A model is any Flax module whose ``__call__`` follows :class:`SpikingModel`. The zoo's models
(:mod:`noisesnn_jax.models`) do, and so can a user's own (the README's ``Net``)::

    model.apply(variables, x, train=True, rngs={"noise": key}, mutable=["batch_stats"])  # T=1 training
    model.apply(variables, x)                          # T=1 network, noise at its mean
    model.apply(variables, x, sample_noise=True, rngs={"noise": key})  # T=1, noise sampled
    model.apply(variables, x, timesteps=8)             # multi-step network, same variables

Inside a multi-step run, tensors after the first spiking layer are time-major ``[T, B, ...]``
(:mod:`noisesnn_jax.layers`). Optional parts, used where present:

- the per-step readout: ending the model with :func:`noisesnn_jax.layers.average_readout` sows the
  logits of every step (``evaluate.step_logits``, ``evaluate.accuracy_curve``);
- batch-norm folding: a ``fold_bn`` field (``convert.fold_batchnorm``);
- the naive step-by-step reference: a ``stateful`` keyword (tests).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import jax

Array = jax.Array
# The keyword arguments every model takes (besides the input).
MODE_KEYWORDS = ("train", "timesteps", "sample_noise")


@runtime_checkable
class SpikingModel(Protocol):
    """``x [B, ...] -> logits [B, K]`` in two time modes with the same variables.

    Keyword arguments:
      train: training mode (batch norm uses and updates batch statistics; at ``T = 1`` the
        noise is sampled from the ``noise`` RNG stream).
      timesteps: ``T``; 1 is the single-step network, ``T > 1`` the multi-step network whose
        logits are averaged over the ``T`` steps.
      sample_noise: at ``T = 1`` outside training, sample the noise (``True``) or hold it at its
        mean (``False``/``None``: the deterministic T=1 network).
    """

    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None) -> Array:
        ...


def check_model(model: Any) -> None:
    """Raise a ``TypeError`` naming what ``model`` lacks of :class:`SpikingModel`."""
    call = type(model).__call__ if callable(model) else None
    if call is None or not hasattr(model, "apply"):
        raise TypeError(f"{type(model).__name__} is not a Flax module with __call__; a model follows "
                        f"noisesnn_jax.contract.SpikingModel")
    params = inspect.signature(call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [k for k in MODE_KEYWORDS if k not in params]
    if missing:
        raise TypeError(f"{type(model).__name__}.__call__ lacks the keyword argument(s) {', '.join(missing)} of "
                        f"the model contract (train, timesteps, sample_noise; see noisesnn_jax.contract."
                        f"SpikingModel): accept them and pass them on to the spiking layers")


def check_logits(model: Any, logits: Array, batch: int, timesteps: int) -> None:
    """Raise a ``ValueError`` unless ``logits`` is ``[batch, K]``: a model that loses the batch
    or time axis (``[T*B, ...]`` averaged the wrong way) fails here instead of scoring garbage."""
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise ValueError(f"{type(model).__name__} returned logits of shape {tuple(logits.shape)} for a batch of "
                         f"{batch} at timesteps={timesteps}; a model returns [B, K]. In multi-step mode keep "
                         f"tensors [T, B, ...], give the first spiking layer constant=True and average the "
                         f"readout over time (layers.average_readout)")
