"""A run's model, optimizer and train state, from its config."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from noisesnn_jax.contract import Array, SpikingModel, Variables
from noisesnn_jax.errors import ConfigError
from noisesnn_jax.models import MODELS
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise


class TrainState(train_state.TrainState):
    """Optax train state plus batch-norm statistics.

    Attributes:
      step: optimizer steps taken.
      apply_fn: the model's ``apply``.
      params: the model's ``params``.
      tx: the optax optimizer.
      opt_state: its state.
      batch_stats: the model's ``batch_stats``, any pytree (``{}`` without batch norm).
    """

    batch_stats: Any = None


# The methods that train an ANN, and its activation (the others train the spiking network).
ANN_ACTIVATIONS = {"convert": "relu", "qcfs": "qcfs", "clip": "clip"}


def _mlp_options(m: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"hidden": tuple(m.hidden)}


def _cnn_options(m: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"channels": tuple(m.channels), "pool_after": tuple(m.pool_after), "pool": m.pool}


def _vgg_options(m: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"pool": m.pool}


def _resnet_options(m: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"stem": m.get("stem", "cifar")}


#: Each zoo model's own keyword arguments, read from ``config.model`` (the ones every model takes
#: are :func:`build_model`'s), by ``config.model.name``: the names a config may choose. A new model
#: is one entry here beside its constructor in :data:`noisesnn_jax.models.MODELS`.
MODEL_OPTIONS: dict[str, Callable[[ml_collections.ConfigDict], dict[str, Any]]] = {
    "mlp": _mlp_options, "cnn": _cnn_options, "vgg11": _vgg_options, "vgg16": _vgg_options,
    "resnet18": _resnet_options, "resnet20": _resnet_options, "resnet34": _resnet_options,
    "resnet50": _resnet_options,
}
assert set(MODEL_OPTIONS) == set(MODELS), "every zoo model needs its entry in MODEL_OPTIONS"


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> SpikingModel:
    """The Flax model that ``config.model``, ``config.neuron`` and ``config.noise`` describe.

    The methods that train an ANN (``convert``, ``qcfs``, ``clip``) get its activation.

    Args:
      config: a run's config (:func:`noisesnn_jax.run.config.get_config`).
      num_classes: ``K``.

    Returns:
      The unbound model of :data:`noisesnn_jax.models.MODELS`.

    Raises:
      ConfigError: an unknown model name, or invalid neuron or noise settings.
    """
    m, n, z = config.model, config.neuron, config.noise
    if m.name not in MODEL_OPTIONS:
        raise ConfigError(f"config.model.name={m.name!r} is invalid; choose one of {sorted(MODEL_OPTIONS)}")
    try:
        neuron = Neuron(threshold=float(n.threshold), tau=None if not n.tau else float(n.tau),
                        reset=n.reset, surrogate=n.surrogate, alpha=float(n.alpha) or None)
        noise = Noise(kind=z.kind, mean=float(z.mean), std=float(z.std),
                      sampler=z.get("sampler", "reparam"))
    except ValueError as e:
        raise ConfigError(f"invalid neuron or noise config: {e}") from None
    activation = ANN_ACTIVATIONS.get(config.get("method", "noisy"), m.activation)
    common = dict(num_classes=num_classes, activation=activation, neuron=neuron, noise=noise,
                  learn_threshold=m.learn_threshold, learn_std=m.learn_std,
                  batch_norm=m.batch_norm, remat=bool(config.train.get("remat", False)),
                  qcfs_levels=int(m.get("qcfs_levels", 4)), qcfs_init=float(m.get("qcfs_init", 4.0)),
                  qcfs_per_layer=bool(m.get("qcfs_per_layer", False)))
    common["dtype"] = jnp.bfloat16 if m.get("dtype", "float32") == "bfloat16" else jnp.float32
    return MODELS[m.name](**MODEL_OPTIONS[m.name](m), **common)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int = 0) -> optax.Schedule:
    """``step -> learning rate`` of ``config.train``.

    A linear warm-up from 0 over ``train.warmup_epochs`` epochs, then cosine decay to 0 at
    ``total_steps`` (``train.schedule="cosine"``) or the constant rate.

    Args:
      config: a run's config.
      total_steps: the run's number of steps.
      steps_per_epoch: steps of one epoch (0: no warm-up).

    Returns:
      The schedule.
    """
    t = config.train
    warmup = int(round(float(t.get("warmup_epochs", 0)) * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    if t.schedule == "cosine":
        lr = optax.cosine_decay_schedule(t.learning_rate, max(total_steps - warmup, 1))
    else:
        lr = optax.constant_schedule(t.learning_rate)
    if warmup:
        lr = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, warmup), lr], [warmup])
    return lr


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int = 0) -> optax.GradientTransformation:
    """Optimizer from ``config.train`` with :func:`learning_rate_schedule`.

    ``adam`` (weight decay added to the gradient when set), ``adamw``, else SGD with Nesterov
    momentum and weight decay.

    Args:
      config: a run's config.
      total_steps: the run's number of steps.
      steps_per_epoch: steps of one epoch (for the warm-up).

    Returns:
      The optimizer.
    """
    t = config.train
    lr = learning_rate_schedule(config, total_steps, steps_per_epoch)
    if t.schedule == "constant" and not float(t.get("warmup_epochs", 0)):
        lr = t.learning_rate  # a plain float: the optimizer state of earlier constant-rate runs
    if t.optimizer == "adam":
        tx = optax.adam(lr)
        if t.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(t.weight_decay), tx)
        return tx
    if t.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=t.weight_decay)
    return optax.chain(optax.add_decayed_weights(t.weight_decay),
                       optax.sgd(lr, momentum=t.momentum, nesterov=True))


def create_state(model: SpikingModel, tx: optax.GradientTransformation, input_shape: tuple[int, ...],
                 key: Array) -> TrainState:
    """Initialize variables on a dummy batch and wrap them in a :class:`TrainState`.

    Args:
      model: the model.
      tx: the optimizer.
      input_shape: one example's shape (no batch axis).
      key: the PRNG key of the initialization (split into ``params`` and ``noise``).

    Returns:
      The state at step 0.
    """
    p_key, n_key = jax.random.split(key)
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=True))(
        {"params": p_key, "noise": n_key}, x)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def variable_shapes(model: SpikingModel, input_shape: tuple[int, ...]) -> Variables:
    """Shapes and dtypes of the model's ``params`` and ``batch_stats``, without allocating them.

    Args:
      model: the model.
      input_shape: one example's shape (no batch axis).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` with ``jax.ShapeDtypeStruct`` leaves
      (``batch_stats`` is ``{}`` without batch norm).
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x,
                                                 train=True), x)
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def variables_of(state: TrainState) -> Variables:
    """The model variables held by ``state``.

    Args:
      state: the train state.

    Returns:
      ``{"params": ...}``, with ``"batch_stats"`` when the model has them.
    """
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v

