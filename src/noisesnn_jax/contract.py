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
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Variables = dict[str, Any]  # a model's variables: {"params": ..., "batch_stats": ...}
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


def check_logits(model: Any, logits: Any, batch: int, timesteps: int, note: str = "") -> None:
    """Raise a ``ValueError`` unless ``logits`` is ``[batch, K]``: a model that loses the batch
    or time axis (``[T*B, ...]`` averaged the wrong way) fails here instead of scoring garbage.
    ``note`` says how the batch was checked (added to the message)."""
    if len(logits.shape) != 2 or logits.shape[0] != batch:
        raise ValueError(f"{type(model).__name__} returned logits of shape {tuple(logits.shape)} for a batch of "
                         f"{batch} at timesteps={timesteps}{note}; a model returns [B, K]. In multi-step mode keep "
                         f"tensors [T, B, ...], give the first spiking layer constant=True and average the "
                         f"readout over time (layers.average_readout)")


def check_timesteps(timesteps: Any, name: str = "timesteps") -> int:
    """``timesteps`` as an ``int``; a ``ValueError`` unless it is an integer >= 1 (not a bool or float)."""
    if isinstance(timesteps, (bool, np.bool_)) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ValueError(f"{name}={timesteps!r} is invalid; it must be an integer >= 1 (the number of time steps)")
    return int(timesteps)


def probe_batch(batch: int, timesteps: int) -> int:
    """The batch size :func:`check_inputs` traces the model with: the user's own, unless it equals ``T``
    (then one more), so that a batch axis can never pass for the time axis."""
    return batch + 1 if batch == timesteps and timesteps > 1 else batch


_CHECKED: set[Any] = set()


def check_inputs(model: Any, variables: Any, images: Any, timesteps: Any, *, sample_noise: bool = False) -> int:
    """The one validation of every inference entry point: the model, ``T``, the input and the output.

    Checks that ``model`` follows :class:`SpikingModel`, that ``timesteps`` is an integer >= 1, that
    noise is sampled only at ``T = 1``, that ``images`` is a non-empty ``[B, ...]`` array of finite
    numbers, and that the model maps it to ``[B, K]`` logits. The last is checked on the model's
    trace (``jax.eval_shape``, no computation) with a batch that differs from ``T``
    (:func:`probe_batch`): a batch of ``T`` images cannot pass for a ``[T, ...]`` time axis, and
    the inference pieces a batch is cut into never hide a wrong output. Traces are checked once per
    ``(model, T, example shape, dtype)``.

    Returns:
      ``timesteps`` as an ``int``.

    Raises:
      TypeError: ``model`` does not follow the contract.
      ValueError: one message naming the mistake, the user's batch and the fix.
    """
    check_model(model)
    timesteps = check_timesteps(timesteps)
    if sample_noise and timesteps != 1:
        raise ValueError(f"sampled noise applies to the T=1 network only (timesteps={timesteps}); the multi-step "
                         f"network carries its residual potential instead. Pass timesteps=1, or do not sample")
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) < 2 or shape[0] == 0:
        raise ValueError(f"images of shape {shape} are invalid; pass a non-empty batch [B, ...] (one example is "
                         f"x[None])")
    dtype = jnp.result_type(images)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"images of dtype {dtype} are invalid; pass floating-point inputs (standardized images), "
                         f"e.g. x.astype(np.float32)")
    if isinstance(images, np.ndarray) and not np.all(np.isfinite(images)):
        raise ValueError(f"images hold {int(np.sum(~np.isfinite(images)))} NaN or inf values; clean the input")
    batch = shape[0]
    probe = probe_batch(batch, timesteps)
    key = (model, timesteps, shape[1:], str(dtype), probe == batch)
    if key in _CHECKED:
        return timesteps
    note = (f" (checked on a batch of {probe} so that the batch cannot pass for the T={timesteps} time axis; "
            f"you passed {batch} images)") if probe != batch else ""
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), variables)
    try:
        out = jax.eval_shape(lambda v, x: model.apply(v, x, timesteps=timesteps), abstract,
                             jax.ShapeDtypeStruct((probe,) + shape[1:], dtype))
    except (ValueError, TypeError, ZeroDivisionError, IndexError) as e:
        raise ValueError(f"{type(model).__name__} cannot run on images of shape {shape} at timesteps={timesteps}"
                         f"{note}: {type(e).__name__}: {e}. Images are [B, ...] as at training (channels-last "
                         f"images [B, H, W, C]: add a channel axis with x[..., None])") from None
    check_logits(model, out, probe, timesteps, note)
    if len(_CHECKED) > 256:
        _CHECKED.clear()
    _CHECKED.add(key)
    return timesteps
