"""Flax Linen layers that run in two time modes with the same variables (docs/design.md).

Tensor layout. In T=1 mode (``timesteps=1``) a layer sees ``[B, ...]``. In multi-step mode
(``timesteps=T > 1``) every tensor after the first spiking layer is time-major, ``[T, B, ...]``:
the time axis stays visible between layers. Flax's conv, dense, pooling and batch norm treat the
extra leading axis as more batch, so stateless layers process all steps in one call; only
:class:`SpikingNeuron` iterates over time, under ``lax.scan``. The input current of the first
spiking layer is ``[B, ...]`` and constant in time (direct coding, ``constant=True``): it is
computed once, not ``T`` times. A neuron given a tensor whose leading axis is not ``T`` (the first
layer without ``constant=True``) raises an error instead of guessing.

The functions below and :class:`SpikingNeuron` report each call to an active trace
(:func:`noisesnn_jax.tracing.record`), so that a trace sees the operations between modules.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from noisesnn_jax import neurons, tracing
from noisesnn_jax.contract import Array
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise, noisy_spike

STATE_COLLECTION = "neuron_state"


READOUT_COLLECTION = "readout"


def flatten_features(x: Array, timesteps: int = 1) -> Array:
    """Flatten each example's features, keeping the leading batch axis or the ``[T, B]`` axes.

    ``[B, H, W, C] -> [B, H*W*C]`` at ``T = 1``, ``[T, B, H, W, C] -> [T, B, H*W*C]`` in
    multi-step mode.

    Args:
      x: ``[B, ...]`` at ``timesteps=1``, else time-major ``[T, B, ...]``.
      timesteps: ``T``; above 1 the two leading axes are kept.

    Returns:
      ``[B, F]`` or ``[T, B, F]``.

    Raises:
      ValueError: ``x`` has no feature axis past its leading axes, or an empty axis.
    """
    lead = 2 if timesteps > 1 else 1
    if x.ndim <= lead or 0 in x.shape:
        raise ValueError(f"flatten_features: an input of shape {tuple(x.shape)} at timesteps={timesteps} has no "
                         f"features to flatten past its {'[T, B]' if lead == 2 else '[B]'} axes; images are "
                         f"channels-last [B, H, W, C] (add a channel axis with x[..., None])")
    return tracing.record("flatten", (x,), x.reshape(x.shape[:lead] + (-1,)))


def pool2d(x: Array, kind: str, window: int, stride: int, padding: str = "VALID") -> Array:
    """Average or max pooling over ``H, W`` of ``[..., H, W, C]`` with any leading axes.

    The leading axes (``[B]`` or ``[T, B]``) are folded into one batch axis for the pooling call
    (XLA's 4-D window reduction is faster on CPU than a 5-D one). ``max`` on spikes is an OR per
    time step.

    Args:
      x: ``[B, H, W, C]`` or ``[T, B, H, W, C]``.
      kind: ``"avg"`` or ``"max"``.
      window: the square window's side.
      stride: the stride along ``H`` and ``W``.
      padding: Flax's padding, ``"VALID"`` or ``"SAME"``.

    Returns:
      The pooled tensor, with the same leading axes.
    """
    pool = {"avg": nn.avg_pool, "max": nn.max_pool}[kind]
    lead = x.shape[:-3]
    y = pool(x.reshape((-1,) + x.shape[-3:]), (window, window), strides=(stride, stride), padding=padding)
    return tracing.record("pool", (x,), y.reshape(lead + y.shape[1:]), kind=kind, window=window, stride=stride,
                          padding=padding)


def global_avg_pool(x: Array) -> Array:
    """Mean over ``H, W``: ``[..., H, W, C] -> [..., C]``.

    Args:
      x: ``[B, H, W, C]`` or ``[T, B, H, W, C]``.

    Returns:
      ``[B, C]`` or ``[T, B, C]``.
    """
    return tracing.record("global_avg_pool", (x,), jnp.mean(x, axis=(-3, -2)))


def add(*xs: Array) -> Array:
    """The sum of currents ``x_1 + x_2 + ...`` (a residual connection).

    Args:
      *xs: one or more tensors of one shape.

    Returns:
      Their sum.
    """
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return tracing.record("add", xs, out)


def average_readout(module: nn.Module, logits: Array, timesteps: int) -> Array:
    """The network's output: readout logits averaged over time, ``[T, B, K] -> [B, K]``
    (at ``T = 1``, ``[B, K]`` as it is).

    The per-step logits ``[T, B, K]`` are sown into the ``readout`` collection (``step_logits``),
    so a caller that asks for it (``mutable=["readout"]``) gets the prediction after every prefix
    of the run from one pass: the mean of the first ``t`` steps is exactly the output of the same
    network run for ``T = t`` steps (the dynamics are causal and start from the same state).

    Args:
      module: the model calling it (it sows into the module's ``readout`` collection).
      logits: ``[B, K]`` at ``timesteps=1``, else time-major ``[T, B, K]``.
      timesteps: ``T``.

    Returns:
      The averaged logits ``[B, K]``.

    Raises:
      ValueError: in multi-step mode, ``logits``' leading axis is not ``T``.
    """
    tracing.record("readout", (logits,), logits, timesteps=timesteps)
    sow = not module.is_initializing()  # the model's variables do not hold a batch's logits
    if timesteps == 1:
        if sow:
            module.sow(READOUT_COLLECTION, "step_logits", logits[None])
        return logits
    if logits.ndim < 2 or logits.shape[0] != timesteps:
        raise ValueError(f"{type(module).__name__}: the readout at timesteps={timesteps} must be time-major "
                         f"[T={timesteps}, B, K]; got shape {tuple(logits.shape)}. Keep the time axis through "
                         f"the network (flatten with layers.flatten_features(x, timesteps)), and give the "
                         f"first spiking layer constant=True")
    if sow:
        module.sow(READOUT_COLLECTION, "step_logits", logits)
    return logits.mean(axis=0)


_WARNED: set[str] = set()


def _warn_noise_key_unused() -> None:
    """Warn, once per process, that a T=1 pass that looks like a training step (a ``noise`` key,
    mutable batch statistics) does not sample noise: ``train=True`` was forgotten."""
    if "noise_key" not in _WARNED:
        _WARNED.add("noise_key")
        import warnings
        message = ("a 'noise' RNG was passed but the T=1 pass does not sample noise: it runs at the noise mean "
                   "and, with batch norm, uses the running statistics. A training step passes train=True "
                   "(model.apply(v, x, train=True, rngs={'noise': key}, mutable=['batch_stats'])); "
                   "evaluation with sampled noise passes sample_noise=True")
        # no stacklevel: Flax's call machinery lies between here and the user's apply, at no fixed depth
        warnings.warn(message, UserWarning)  # noqa: B028


class SpikingNeuron(nn.Module):
    """IF/LIF spiking layer: noisy single step at T=1, deterministic dynamics at T=N.

    Output is ``theta * s`` (the spike amplitude is the threshold), so the rate of a multi-step
    neuron and the expected T=1 spike are on the same scale as the input current.

    Attributes:
      neuron: dynamics (threshold, tau, reset, surrogate). ``neuron.v_init`` is not used: the
        multi-step network starts at ``v_init = noise.mean * theta`` (docs/method.md, section 4).
      noise: T=1 noise; kind ``none`` is the deterministic ablation.
      learn_threshold: a trainable per-channel threshold (param ``threshold``, shape ``[C]``).
      learn_std: a trainable per-channel noise std (param ``noise_std``, shape ``[C]``).
      remat: recompute each time step's internals in the backward pass (``jax.checkpoint`` over
        time), so BPTT stores one potential per step instead of every intermediate.
    """

    neuron: Neuron = Neuron()
    noise: Noise = Noise()
    learn_threshold: bool = False
    learn_std: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array, *, timesteps: int = 1, constant: bool = False,
                 train: bool = False, sample_noise: bool | None = None,
                 stateful: bool = False) -> Array:
        """Fire.

        Args:
          x: input current, ``[B, ..., C]`` at T=1 or when ``constant``, else ``[T, B, ..., C]``.
          timesteps: ``T``; 1 is the single-step (noisy) network.
          constant: ``x`` is ``[B, ...]`` and held constant over the ``T`` steps (first layer).
          train: training mode; at T=1 noise is sampled when training.
          sample_noise: override whether T=1 noise is sampled (default: ``train``).
          stateful: one step of a network run step by step, the potential kept in the
            ``neuron_state`` collection (the naive reference; ``timesteps`` must be 1).

        Returns:
          ``theta * spikes``: ``[B, ...]`` at T=1, ``[T, B, ...]`` in multi-step mode.

        Raises:
          ValueError: in multi-step mode without ``constant``, when ``x``'s leading axis is not
            ``timesteps`` (a ``[B, ...]`` input current given to a layer that expects
            ``[T, B, ...]``: the first spiking layer needs ``constant=True``); or
            ``sample_noise=True`` in multi-step mode.
        """
        channels = x.shape[-1]
        if self.learn_threshold:
            theta = self.param("threshold", nn.initializers.constant(self.neuron.threshold),
                               (channels,), jnp.float32)
            theta = jnp.maximum(theta, 1e-3).astype(x.dtype)
        else:
            theta = self.neuron.threshold
        std = None
        if self.learn_std:
            std = self.param("noise_std", nn.initializers.constant(self.noise.std),
                             (channels,), jnp.float32)
            std = jnp.maximum(jnp.abs(std), 1e-3).astype(x.dtype)
        v_init = self.noise.mean * theta

        if stateful:
            v = self.variable(STATE_COLLECTION, "v",
                              lambda: jnp.broadcast_to(jnp.asarray(v_init, x.dtype), x.shape))
            v_next, s = neurons.step(self.neuron, v.value, x, theta)
            if not self.is_initializing():
                v.value = v_next
        elif timesteps == 1:
            sample = train if sample_noise is None else sample_noise
            if (not sample and self.noise.stochastic and self.has_rng("noise") and not self.is_initializing()
                    and self.is_mutable_collection("batch_stats")):  # the look of a training step
                _warn_noise_key_unused()
            sample = sample and self.noise.stochastic
            key = self.make_rng("noise") if sample else None
            s = noisy_spike(self.neuron, self.noise, x, key, threshold=theta, std=std,
                            sample=sample)
        else:
            if sample_noise:
                raise ValueError(f"SpikingNeuron {self.name!r}: sample_noise=True applies to the T=1 network only "
                                 f"(timesteps={timesteps}); the multi-step network carries its residual potential "
                                 f"instead. Pass timesteps=1, or do not sample")
            v0 = jnp.asarray(v_init, x.dtype)
            if constant:
                s, _ = neurons.run_constant(self.neuron, x, timesteps, v0, theta, remat=self.remat)
            else:
                if x.ndim < 2 or x.shape[0] != timesteps:
                    raise ValueError(
                        f"SpikingNeuron {self.name!r} at timesteps={timesteps} expects a time-major input "
                        f"[T={timesteps}, B, ...], got shape {tuple(x.shape)}. If this is the first spiking "
                        f"layer, its input current is [B, ...] and constant over time: pass constant=True")
                s, _ = neurons.run(self.neuron, x, v0, theta, remat=self.remat)
        self.sow("intermediates", "firing_rate", jnp.mean(s.astype(jnp.float32)))
        return tracing.record("spiking", (x,), s * theta, module=self, threshold=theta)


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (Bu et al., ICLR 2022), the ANN side of QCFS.

    ``h(x) = lam * clip(floor(x * L / lam + 1/2) / L, 0, 1)`` with a trainable per-channel
    ``lam`` (param ``threshold``, so the converted spiking layer finds its threshold under the
    same name). Backward: straight-through over the floor, so ``d h / d x = 1`` on ``(0, lam)``.
    An IF neuron with threshold ``lam`` started at ``lam/2`` computes this rate exactly at T = L
    for constant input.

    Attributes:
      levels: ``L``, the number of quantization levels.
      init_threshold: the initial ``lam``.
      per_layer: one ``lam`` for the layer (shape ``[1]``, as the original QCFS code), else one per
        channel (shape ``[C]``).
    """

    levels: int = 4
    init_threshold: float = 4.0
    per_layer: bool = False  # one lam for the layer (the official code), else one per channel

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Quantized clipped activation.

        Args:
          x: the input current ``[..., C]``.

        Returns:
          ``h(x)``, of ``x``'s shape.
        """
        shape = (1,) if self.per_layer else (x.shape[-1],)
        lam = self.param("threshold", nn.initializers.constant(self.init_threshold), shape, jnp.float32)
        lam = jnp.maximum(lam, 1e-3).astype(x.dtype)
        q = x / lam
        smooth = jnp.clip(q, 0.0, 1.0)
        quant = jnp.clip(jnp.floor(q * self.levels + 0.5) / self.levels, 0.0, 1.0)
        return lam * (smooth + jax.lax.stop_gradient(quant - smooth))


class Clip(nn.Module):
    """``clip(x, 0, theta)``: the ANN side of clip-trained conversion (TCL, Ho and Chang 2021).

    The large-T rate of an IF neuron with threshold ``theta`` started at ``theta/2`` is this clip,
    so the trained ANN runs as a spiking network with the same weights. ``theta`` is the neuron's
    threshold, or, with ``learn``, a trainable per-channel param ``threshold`` (the name the
    spiking layer reads) initialized at it.

    Attributes:
      threshold: ``theta``, or the initial value of the learned one.
      learn: learn a per-channel ``theta`` (param ``threshold``, shape ``[C]``).
    """

    threshold: float = 1.0
    learn: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Clipped activation.

        Args:
          x: the input ``[..., C]``.

        Returns:
          ``clip(x, 0, theta)``, of ``x``'s shape.
        """
        if not self.learn:
            return jnp.clip(x, 0.0, self.threshold)
        theta = self.param("threshold", nn.initializers.constant(self.threshold), (x.shape[-1],), jnp.float32)
        return jnp.clip(x, 0.0, jnp.maximum(theta, 1e-3).astype(x.dtype))


ACTIVATION_KINDS = ("spike", "relu", "qcfs", "clip")


class Activation(nn.Module):
    """One switch per model: ``spike`` (a :class:`SpikingNeuron`), ``relu`` (the ANN reference),
    ``qcfs`` (the quantized ANN of the QCFS baseline) or ``clip`` (the clip-trained ANN).

    The spiking, QCFS and clip layers are built as a submodule named ``neuron``.

    Attributes:
      kind: one of :data:`ACTIVATION_KINDS` (``spike``, ``relu``, ``qcfs``, ``clip``).
      neuron: the spiking dynamics (``spike``); its threshold is also ``clip``'s ``theta``.
      noise: the T=1 noise (``spike``).
      learn_threshold: a trainable per-channel threshold (``spike`` and ``clip``).
      learn_std: a trainable per-channel noise std (``spike``).
      remat: recompute each time step in the backward pass (``spike``).
      qcfs_levels: ``L`` of ``qcfs``.
      qcfs_init: the initial ``lam`` of ``qcfs``.
      qcfs_per_layer: one ``lam`` per layer instead of per channel (``qcfs``).
    """

    kind: str = "spike"
    neuron: Neuron = Neuron()
    noise: Noise = Noise()
    learn_threshold: bool = False
    learn_std: bool = False
    remat: bool = False
    qcfs_levels: int = 4
    qcfs_init: float = 4.0
    qcfs_per_layer: bool = False

    @nn.compact
    def __call__(self, x: Array, **mode) -> Array:
        """Apply the activation.

        Args:
          x: the input current: ``[B, ...]``, or ``[T, B, ...]`` after the first spiking layer in
            multi-step mode.
          **mode: :class:`SpikingNeuron`'s keyword arguments (``timesteps``, ``constant``,
            ``train``, ``sample_noise``, ``stateful``); the ANN kinds ignore them.

        Returns:
          The activation, of ``x``'s shape except in multi-step mode with ``constant=True``
          (``[B, ...] -> [T, B, ...]``).

        Raises:
          ValueError: as :meth:`SpikingNeuron.__call__`.
        """
        if self.kind == "relu":
            return nn.relu(x)
        if self.kind == "qcfs":
            return QCFS(self.qcfs_levels, self.qcfs_init, self.qcfs_per_layer, name="neuron")(x)
        if self.kind == "clip":
            return Clip(self.neuron.threshold, self.learn_threshold, name="neuron")(x)
        return SpikingNeuron(self.neuron, self.noise, self.learn_threshold, self.learn_std,
                             self.remat, name="neuron")(x, **mode)
