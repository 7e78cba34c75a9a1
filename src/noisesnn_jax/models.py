"""Spiking models built from :mod:`noisesnn_jax.layers`; each also builds as a ReLU ANN.

Every model takes ``x`` as ``[B, ...]`` and returns logits ``[B, K]``, and runs in the two modes
of :class:`~noisesnn_jax.layers.SpikingNeuron` with the same variables (inside, multi-step
tensors are ``[T, B, ...]``)::

    model.apply(variables, x, train=True, rngs={"noise": key}, mutable=["batch_stats"])  # T=1
    model.apply(variables, x, timesteps=8)   # multi-step, logits averaged over the 8 steps

The readout layer does not spike. Each model follows the model contract
(:class:`noisesnn_jax.contract.SpikingModel`) and has a ``fold_bn`` field for batch-norm folding.
Module names are ``conv{i}``/``dense{i}``, ``bn{i}`` and ``act{i}``; the ANN-to-SNN baselines
(:func:`noisesnn_jax.baselines.ann_to_snn`) find a spiking layer's feeding layer by them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array
from noisesnn_jax.layers import ACTIVATION_KINDS, Activation, add, average_readout, flatten_features, global_avg_pool, pool2d
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise

ACTIVATIONS = ACTIVATION_KINDS
POOLS = ("avg", "max")
BN_EPS = 1e-5
BN_MOMENTUM = 0.9


def _check_mode(activation: str, timesteps: Any, stateful: bool) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is invalid; choose one of {list(ACTIVATIONS)}")
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
    if stateful and timesteps != 1:
        raise ValueError("stateful=True runs one step at a time; pass timesteps=1")
    # The ANNs (relu, qcfs, clip) have no time: they ignore timesteps.
    return timesteps if activation == "spike" else 1


@dataclasses.dataclass(frozen=True)
class Mode:
    """How one forward pass runs: the model contract's keyword arguments, handed to every block
    (hashable, so a rematerialized block takes it as a static argument).

    Attributes:
      train: training mode.
      timesteps: ``T``.
      sample_noise: sample the T=1 noise; ``None`` follows ``train``.
      stateful: one step of a network run step by step (the naive reference).
    """

    train: bool = False
    timesteps: int = 1
    sample_noise: bool | None = None
    stateful: bool = False

    def neuron(self, constant: bool = False) -> dict[str, Any]:
        """The keyword arguments of :class:`~noisesnn_jax.layers.SpikingNeuron`.

        Args:
          constant: the layer's input is ``[B, ...]`` and held constant over time (the first
            spiking layer).

        Returns:
          ``timesteps``, ``constant``, ``train``, ``sample_noise`` and ``stateful`` by name.
        """
        return dict(timesteps=self.timesteps, constant=constant, train=self.train,
                    sample_noise=self.sample_noise, stateful=self.stateful)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What every block of a model shares: activation, neuron and noise, batch norm, dtype.

    Attributes:
      activation: ``spike``, ``relu``, ``qcfs`` or ``clip``.
      neuron: the spiking dynamics.
      noise: the T=1 noise.
      learn_threshold: trainable per-channel thresholds.
      learn_std: trainable per-channel noise stds.
      qcfs_levels: quantization levels ``L`` of ``qcfs``.
      batch_norm: a batch norm after each conv/dense layer.
      fold_bn: the batch norm is folded: the layer carries a bias and no batch norm.
      dtype: the layers' computation dtype.
      qcfs_init: the initial ``lam`` of ``qcfs``.
      qcfs_per_layer: one ``lam`` per layer instead of one per channel.
    """

    activation: str
    neuron: Neuron
    noise: Noise
    learn_threshold: bool
    learn_std: bool
    qcfs_levels: int
    batch_norm: bool
    fold_bn: bool
    dtype: jax.typing.DTypeLike
    qcfs_init: float = 4.0
    qcfs_per_layer: bool = False

    def activate(self, name: str) -> Activation:
        """The activation layer (spiking, ReLU, QCFS or clip).

        Args:
          name: the module name (``act{i}``).

        Returns:
          An unbound :class:`~noisesnn_jax.layers.Activation`.
        """
        return Activation(self.activation, self.neuron, self.noise, self.learn_threshold, self.learn_std,
                          False, self.qcfs_levels, self.qcfs_init, self.qcfs_per_layer, name=name)


class Block(nn.Module):
    """``conv{suffix}``/``dense{suffix}`` -> ``bn{suffix}`` -> ``act{suffix}``: a layer that owns its
    batch norm and activation. Its modules live in the parent's namespace (``nn.share_scope``), so
    parameter names are those of a flat network.

    Attributes:
      spec: the settings the model's blocks share.
      suffix: the module names' suffix (``conv{suffix}``, ...).
      width: output features or channels.
      conv: a ``kernel x kernel`` convolution with ``SAME`` padding; ``False``: a dense layer.
      kernel: the convolution's kernel side.
      stride: the convolution's stride.
      activate: end with the activation; ``False`` stops after the batch norm (a residual
        branch, added before the neuron).
    """

    spec: LayerSpec
    suffix: str
    width: int
    conv: bool = True
    kernel: int = 3
    stride: int = 1
    activate: bool = True

    @nn.compact
    def __call__(self, x: Array, mode: Mode, constant: bool = False) -> Array:
        """Run the layer, its batch norm and its activation.

        Args:
          x: ``[B, ...]``, or ``[T, B, ...]`` after the first spiking layer in multi-step mode.
          mode: how the forward pass runs.
          constant: ``x`` is the first layer's ``[B, ...]`` input, held constant over time.

        Returns:
          The block's output: ``[T, B, ...]`` in multi-step mode once spiking, else ``[B, ...]``.
        """
        spec = self.spec
        bias = spec.fold_bn or not spec.batch_norm
        if self.conv:
            x = nn.Conv(self.width, (self.kernel, self.kernel), strides=(self.stride, self.stride), padding="SAME",
                        use_bias=bias, dtype=spec.dtype, name=f"conv{self.suffix}")(x)
        else:
            x = nn.Dense(self.width, use_bias=bias, dtype=spec.dtype, name=f"dense{self.suffix}")(x)
        if not bias:
            x = nn.BatchNorm(use_running_average=not mode.train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                             dtype=spec.dtype, name=f"bn{self.suffix}")(x)
        return spec.activate(f"act{self.suffix}")(x, **mode.neuron(constant)) if self.activate else x


class ResidualBlock(nn.Module):
    """A ResNet block on currents: ``act(bn(conv(...)) + shortcut(x))`` (docs/method.md section 4);
    basic (3x3-3x3) or bottleneck (1x1-3x3-1x1, width x4). Modules in the parent's namespace.

    Attributes:
      spec: the settings the model's blocks share.
      tag: in its modules' names: ``conv{tag}_a``, ``bn{tag}_a``, ``act{tag}_out``, ...
      width: the block's width (its output has ``4 * width`` channels when ``bottleneck``).
      stride: the stride of the first 3x3 convolution and of the shortcut.
      bottleneck: 1x1-3x3-1x1 instead of 3x3-3x3.
    """

    spec: LayerSpec
    tag: str  # in its modules' names: conv{tag}_a, bn{tag}_a, act{tag}_out, ...
    width: int
    stride: int = 1
    bottleneck: bool = False

    @nn.compact
    def __call__(self, x: Array, mode: Mode) -> Array:
        """Run the block.

        Args:
          x: ``[B, H, W, C]``, or ``[T, B, H, W, C]`` in multi-step mode.
          mode: how the forward pass runs.

        Returns:
          The block's spikes (or ANN activations), with the same leading axes as ``x``.
        """
        w = self.width

        def block(part: str, width: int, kernel: int, stride: int = 1, activate: bool = True) -> Block:
            b = Block(self.spec, f"{self.tag}_{part}", width, True, kernel, stride, activate,
                      name=f"block{self.tag}_{part}")
            nn.share_scope(self, b)
            return b

        if self.bottleneck:
            h = block("a", w, 1)(x, mode)
            h = block("b", w, 3, self.stride)(h, mode)
            out_width = 4 * w
            h = block("c", out_width, 1, activate=False)(h, mode)
        else:
            h = block("a", w, 3, self.stride)(x, mode)
            out_width = w
            h = block("b", w, 3, activate=False)(h, mode)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_width:
            shortcut = block("sc", out_width, 1, self.stride, activate=False)(x, mode)
        return self.spec.activate(f"act{self.tag}_out")(add(h, shortcut), **mode.neuron())


# The fields and call arguments every zoo model shares, documented once and added to each
# model's docstrings by :func:`_shared_docs`.
_SHARED_FIELDS = """\
      num_classes: ``K``, the number of logits.
      activation: ``spike`` (the spiking network), or an ANN that ignores ``timesteps``:
        ``relu``, ``qcfs`` or ``clip``.
      neuron: the spiking dynamics (threshold, tau, reset, surrogate).
      noise: the T=1 noise.
      learn_threshold: trainable per-channel thresholds.
      learn_std: trainable per-channel noise stds.
      batch_norm: a batch norm after every conv/dense layer but the readout.
      fold_bn: the batch norms are folded into the layers before them: those layers carry a bias
        and no batch norm (:func:`noisesnn_jax.convert.fold_batchnorm`).
      remat: recompute each block in the backward pass (BPTT memory).
      qcfs_levels: quantization levels ``L`` of ``activation="qcfs"``.
      dtype: the layers' computation dtype (e.g. ``jnp.bfloat16``); the logits are float32.
      qcfs_init: the initial ``lam`` of ``activation="qcfs"``.
      qcfs_per_layer: one ``lam`` per layer instead of one per channel (``qcfs``).
"""
_CALL_ARGS = """\
          train: training mode: batch norm uses and updates batch statistics, and the T=1 noise
            is sampled from the ``noise`` RNG stream.
          timesteps: ``T``; 1 is the single-step network, ``T > 1`` the multi-step network.
          sample_noise: at ``T = 1``, sample the noise (``True``) or hold it at its mean
            (``False``); ``None`` follows ``train``.
          stateful: one step of the network run step by step, the potentials kept in the
            ``neuron_state`` collection (the naive reference of the tests; ``timesteps`` 1).
"""


def _shared_docs(cls: type) -> type:
    """Add the shared fields (``Attributes:``) and call arguments (``Args:``, after ``x``) to a zoo
    model's docstrings."""
    cls.__doc__ = cls.__doc__.replace("    Attributes:\n", "    Attributes:\n" + _SHARED_FIELDS, 1)
    doc = cls.__call__.__doc__
    cut = doc.index("\n\n        Returns:")
    cls.__call__.__doc__ = doc[:cut] + "\n" + _CALL_ARGS.rstrip("\n") + doc[cut:]
    return cls


class _SNNBase(nn.Module):
    """Shared fields: classes, activation, neuron and noise, batch-norm handling, dtype."""

    num_classes: int = 10
    activation: str = "spike"
    neuron: Neuron = Neuron()
    noise: Noise = Noise()
    learn_threshold: bool = False
    learn_std: bool = False
    batch_norm: bool = True
    fold_bn: bool = False  # batch norm folded into the preceding layer's weights and bias
    remat: bool = False  # recompute each block in the backward pass (BPTT memory)
    qcfs_levels: int = 4  # quantization levels L of activation="qcfs"
    dtype: jax.typing.DTypeLike = jnp.float32
    qcfs_init: float = 4.0  # initial clip lam of activation="qcfs" (the official code: 8)
    qcfs_per_layer: bool = False  # one lam per layer (the official code) instead of per channel

    @property
    def spec(self) -> LayerSpec:
        """The settings this model's blocks share."""
        return LayerSpec(self.activation, self.neuron, self.noise, self.learn_threshold, self.learn_std,
                         self.qcfs_levels, self.batch_norm, self.fold_bn, self.dtype, self.qcfs_init,
                         self.qcfs_per_layer)

    def _shared(self, cls: type[nn.Module], tag: str, *args) -> nn.Module:
        """A block of ``cls`` in this model's namespace; under ``nn.remat`` when ``remat``, so
        backpropagation stores only the block's input and recomputes the rest."""
        if self.remat:
            static = (2, 3) if cls is Block else (2,)  # (self, x, mode[, constant])
            cls = nn.remat(cls, static_argnums=static)
        block = cls(self.spec, tag, *args, name=f"block{tag}")  # no parameters of its own: see share_scope
        nn.share_scope(self, block)
        return block

    def _block(self, x: Array, i: int | str, width: int, conv: bool, mode: Mode, *, constant: bool = False,
               kernel: int = 3, stride: int = 1) -> Array:
        """``conv{i}``/``dense{i}`` -> ``bn{i}`` -> ``act{i}`` (a :class:`Block`)."""
        return self._shared(Block, str(i), width, conv, kernel, stride)(x, mode, constant)


@_shared_docs
class MLP(_SNNBase):
    """Dense-BN-spike blocks and a non-spiking dense readout: ``[B, ...] -> [B, K]``.

    Attributes:
      hidden: the hidden layers' widths.
    """

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode.

        Args:
          x: the input ``[B, ...]``, flattened to ``[B, F]``.

        Returns:
          Logits ``[B, K]`` in float32.

        Raises:
          ValueError: an unknown ``activation``, ``timesteps`` not an integer >= 1,
            ``stateful`` with ``timesteps != 1``, or ``sample_noise=True`` in multi-step mode.
        """
        T = _check_mode(self.activation, timesteps, stateful)
        mode = Mode(train, T, sample_noise, stateful)
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        expanded = False
        for i, width in enumerate(self.hidden):
            x = self._block(x, i, width, False, mode, constant=not expanded)
            expanded = expanded or T > 1
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T if expanded else 1).astype(jnp.float32)


@_shared_docs
class CNN(_SNNBase):
    """Conv3x3-BN-spike blocks, pooling after chosen blocks, a non-spiking dense readout.

    Input ``[B, H, W, C]`` (channels-last); logits ``[B, K]``. ``pool="max"`` on spikes is an OR
    per time step; ``"avg"`` is exact on rates.

    Attributes:
      channels: each conv layer's channels.
      pool_after: the indices of the conv layers followed by a 2x2 pooling.
      pool: ``"avg"`` or ``"max"``.
    """

    channels: Sequence[int] = (16, 32, 64, 64)
    pool_after: Sequence[int] = (0, 2)
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode.

        Args:
          x: images ``[B, H, W, C]`` (channels-last).

        Returns:
          Logits ``[B, K]`` in float32.

        Raises:
          ValueError: an unknown ``activation`` or ``pool``, ``x`` not 4-D, ``timesteps`` not an integer >= 1,
            ``stateful`` with ``timesteps != 1``, or ``sample_noise=True`` in multi-step mode.
        """
        T = _check_mode(self.activation, timesteps, stateful)
        if self.pool not in POOLS:
            raise ValueError(f"pool={self.pool!r} is invalid; choose one of {list(POOLS)}")
        if x.ndim != 4:
            raise ValueError(f"CNN expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x, mode = x.astype(self.dtype), Mode(train, T, sample_noise, stateful)
        expanded = False
        for i, width in enumerate(self.channels):
            x = self._block(x, i, width, True, mode, constant=not expanded)
            expanded = expanded or T > 1
            if i in self.pool_after:
                x = pool2d(x, self.pool, 2, 2)
        x = flatten_features(x, T if expanded else 1)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T if expanded else 1).astype(jnp.float32)


@_shared_docs
class VGG(_SNNBase):
    """Spiking VGG for 32x32 inputs: conv3x3-BN-spike stages, average pooling after each stage,
    one hidden dense layer and a non-spiking readout.

    Attributes:
      stages: each stage's conv widths.
      hidden: the hidden dense layer's width.
      pool: ``"avg"`` or ``"max"`` after each stage.
    """

    stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
    hidden: int = 512
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode.

        Args:
          x: images ``[B, H, W, C]`` (channels-last), 32x32 for the default stages.

        Returns:
          Logits ``[B, K]`` in float32.

        Raises:
          ValueError: an unknown ``activation``, ``x`` not 4-D, ``timesteps`` not an integer >= 1,
            ``stateful`` with ``timesteps != 1``, or ``sample_noise=True`` in multi-step mode.
        """
        T = _check_mode(self.activation, timesteps, stateful)
        if x.ndim != 4:
            raise ValueError(f"VGG expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x, i, expanded = x.astype(self.dtype), 0, False
        mode = Mode(train, T, sample_noise, stateful)
        for widths in self.stages:
            for w in widths:
                x = self._block(x, i, w, True, mode, constant=not expanded)
                expanded, i = expanded or T > 1, i + 1
            x = pool2d(x, self.pool, 2, 2)
        x = flatten_features(x, T)
        x = self._block(x, i, self.hidden, False, mode, constant=not expanded)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T).astype(jnp.float32)


@_shared_docs
class ResNet(_SNNBase):
    """Spiking ResNet; residual additions on currents before the neuron (docs/method.md section 4).

    ``stem="cifar"``: conv3x3 for 32x32 inputs; ``"imagenet"``: conv7x7 stride 2 and a 3x3 max
    pool. ``bottleneck`` blocks (1x1-3x3-1x1, width x4) for ResNet-50. Global average pooling and
    a non-spiking readout.

    Attributes:
      stage_sizes: the number of residual blocks of each stage.
      widths: each stage's width (the stem has the first).
      bottleneck: bottleneck blocks instead of basic ones.
      stem: ``"cifar"`` or ``"imagenet"``.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    bottleneck: bool = False
    stem: str = "cifar"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode.

        Args:
          x: images ``[B, H, W, C]`` (channels-last).

        Returns:
          Logits ``[B, K]`` in float32.

        Raises:
          ValueError: an unknown ``activation``, ``x`` not 4-D, ``timesteps`` not an integer >= 1,
            ``stateful`` with ``timesteps != 1``, or ``sample_noise=True`` in multi-step mode.
        """
        T = _check_mode(self.activation, timesteps, stateful)
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x, mode = x.astype(self.dtype), Mode(train, T, sample_noise, stateful)
        if self.stem == "imagenet":
            x = self._block(x, 0, self.widths[0], True, mode, constant=True, kernel=7, stride=2)
            x = pool2d(x, "max", 3, 2, "SAME")
        else:
            x = self._block(x, 0, self.widths[0], True, mode, constant=True)
        for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(n):
                stride = 2 if b == 0 and s > 0 else 1
                x = self._shared(ResidualBlock, f"s{s}b{b}", w, stride, self.bottleneck)(x, mode)
        x = global_avg_pool(x)  # [(T,) B, H, W, C] -> [(T,) B, C]
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T).astype(jnp.float32)


def vgg11(**kw) -> VGG:
    """VGG-11 for 32x32 inputs.

    Args:
      **kw: the other fields of :class:`VGG` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return VGG(stages=((64,), (128,), (256, 256), (512, 512), (512, 512)), **kw)


def vgg16(**kw) -> VGG:
    """VGG-16 for 32x32 inputs.

    Args:
      **kw: the other fields of :class:`VGG` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return VGG(stages=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)), **kw)


def resnet18(**kw) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2); ``stem`` cifar (default) or imagenet.

    Args:
      **kw: the other fields of :class:`ResNet` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return ResNet(stage_sizes=(2, 2, 2, 2), **kw)


def resnet20(**kw) -> ResNet:
    """ResNet-20 for CIFAR (basic blocks 3-3-3, widths 16-32-64).

    Args:
      **kw: the other fields of :class:`ResNet` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return ResNet(stage_sizes=(3, 3, 3), widths=(16, 32, 64), **kw)


def resnet34(**kw) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3).

    Args:
      **kw: the other fields of :class:`ResNet` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return ResNet(stage_sizes=(3, 4, 6, 3), **kw)


def resnet50(**kw) -> ResNet:
    """ResNet-50 (bottleneck blocks 3-4-6-3, widths x4).

    Args:
      **kw: the other fields of :class:`ResNet` (``num_classes``, ``activation``, ...).

    Returns:
      The unbound model.
    """
    return ResNet(stage_sizes=(3, 4, 6, 3), bottleneck=True, **kw)


#: The zoo's models by name (``config.model.name``), classes and constructors of unbound models.
MODELS = {"mlp": MLP, "cnn": CNN, "vgg11": vgg11, "vgg16": vgg16, "resnet18": resnet18,
          "resnet20": resnet20, "resnet34": resnet34, "resnet50": resnet50}
