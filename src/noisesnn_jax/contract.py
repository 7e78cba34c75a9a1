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

#: A JAX array (``jax.Array``), the type of inputs, currents, spikes and logits.
Array = jax.Array
#: A model's variables as Flax's ``init`` gives them, ``{"params": ..., "batch_stats": ...}``.
Variables = dict[str, Any]
#: The keyword arguments every model takes (besides the input).
MODE_KEYWORDS = ("train", "timesteps", "sample_noise")


@runtime_checkable
class SpikingModel(Protocol):
    """``x [B, ...] -> logits [B, K]`` in two time modes with the same variables.

    A Flax module follows it when its ``__call__`` takes the keyword arguments ``train``,
    ``timesteps`` and ``sample_noise`` (or ``**kwargs``), documented on ``__call__``;
    :func:`check_model` checks that.
    """

    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None) -> Array:
        """Logits of a batch.

        Args:
          x: the input batch ``[B, ...]`` (images ``[B, H, W, C]``).
          train: training mode (batch norm uses and updates batch statistics; at ``T = 1`` the
            noise is sampled from the ``noise`` RNG stream).
          timesteps: ``T``; 1 is the single-step network, ``T > 1`` the multi-step network whose
            logits are averaged over the ``T`` steps.
          sample_noise: at ``T = 1`` outside training, sample the noise (``True``) or hold it at
            its mean (``False``/``None``: the deterministic T=1 network).

        Returns:
          Logits ``[B, K]``.
        """
        ...


def check_model(model: object) -> None:
    """Check that ``model`` follows :class:`SpikingModel`.

    Args:
      model: any object; a model is a Flax module whose ``__call__`` takes ``train``,
        ``timesteps`` and ``sample_noise`` (or ``**kwargs``).

    Raises:
      TypeError: naming what ``model`` lacks.
    """
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


def check_logits(model: SpikingModel, logits: Array | jax.ShapeDtypeStruct, batch: int, timesteps: int,
                 note: str = "") -> None:
    """Check that ``logits`` is ``[batch, K]``.

    A model that loses the batch or time axis (a ``[T, B, ...]`` tensor flattened to
    ``[T*B, ...]`` or averaged over the wrong axis) fails here instead of scoring garbage.

    Args:
      model: the model that returned ``logits`` (named in the message).
      logits: its output, or its abstract shape (``jax.eval_shape``).
      batch: ``B``, the batch it was given.
      timesteps: ``T`` it ran at (named in the message).
      note: how the batch was checked, added to the message.

    Raises:
      ValueError: ``logits`` is not 2-D with ``batch`` rows; the message names the fix.
    """
    if len(logits.shape) != 2 or logits.shape[0] != batch:
        raise ValueError(f"{type(model).__name__} returned logits of shape {tuple(logits.shape)} for a batch of "
                         f"{batch} at timesteps={timesteps}{note}; a model returns [B, K]. In multi-step mode keep "
                         f"tensors [T, B, ...], give the first spiking layer constant=True and average the "
                         f"readout over time (layers.average_readout)")


def check_timesteps(timesteps: object, name: str = "timesteps") -> int:
    """Check that ``timesteps`` is an integer >= 1 (not a bool or float).

    Args:
      timesteps: any value given as ``T``.
      name: its name in the message.

    Returns:
      ``timesteps`` as an ``int``.

    Raises:
      ValueError: ``timesteps`` is not an integer >= 1.
    """
    if isinstance(timesteps, (bool, np.bool_)) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ValueError(f"{name}={timesteps!r} is invalid; it must be an integer >= 1 (the number of time steps)")
    return int(timesteps)


def probe_batch(batch: int, timesteps: int) -> int:
    """The batch size :func:`check_inputs` traces the model with.

    The user's own, unless it equals ``T`` (then one more), so that a batch axis can never pass
    for the time axis.

    Args:
      batch: the user's batch size.
      timesteps: ``T``.

    Returns:
      ``batch + 1`` when ``batch == timesteps > 1``, else ``batch``.
    """
    return batch + 1 if batch == timesteps and timesteps > 1 else batch


_CHECKED: set[Any] = set()


def check_inputs(model: SpikingModel, variables: Variables, images: Array | np.ndarray, timesteps: int, *,
                 sample_noise: bool = False) -> int:
    """The one validation of every inference entry point: the model, ``T``, the input and the output.

    Checks that ``model`` follows :class:`SpikingModel`, that ``timesteps`` is an integer >= 1, that
    noise is sampled only at ``T = 1``, that ``images`` is a non-empty ``[B, ...]`` array of finite
    numbers, and that the model maps it to ``[B, K]`` logits. The last is checked on the model's
    trace (``jax.eval_shape``, no computation) with a batch that differs from ``T``
    (:func:`probe_batch`): a batch of ``T`` images cannot pass for a ``[T, ...]`` time axis, and
    the inference pieces a batch is cut into never hide a wrong output. Traces are checked once per
    ``(model, T, example shape, dtype)``.

    Args:
      model: the model to check.
      variables: its variables (only their shapes and dtypes are read).
      images: the input batch ``[B, ...]``, floating point (a jax or numpy array; a numpy one is
        also checked for NaN and inf).
      timesteps: ``T``.
      sample_noise: the caller samples the T=1 noise (allowed at ``T = 1`` only).

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
