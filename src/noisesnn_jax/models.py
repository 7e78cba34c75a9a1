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

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from noisesnn_jax.layers import ACTIVATION_KINDS, Activation, average_readout, flatten_features, pool2d
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise

Array = jax.Array
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
    # The ANNs (relu, qcfs) have no time: they ignore timesteps.
    return timesteps if activation == "spike" else 1


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
    dtype: Any = jnp.float32

    def _norm(self, x: Array, suffix: str | int, train: bool) -> Array:
        if self.fold_bn or not self.batch_norm:
            return x
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                            dtype=self.dtype, name=f"bn{suffix}")(x)

    @property
    def _layer_bias(self) -> bool:
        return self.fold_bn or not self.batch_norm

    def _act(self, x: Array, suffix: str | int, mode: dict) -> Array:
        return Activation(self.activation, self.neuron, self.noise, self.learn_threshold,
                          self.learn_std, False, self.qcfs_levels, name=f"act{suffix}")(x, **mode)

    def _block(self, x: Array, i: int | str, width: int, conv: bool, train: bool, T: int, constant: bool,
               sample_noise: bool | None, stateful: bool, kernel: int = 3, stride: int = 1) -> Array:
        """``conv{i}``/``dense{i}`` -> ``bn{i}`` -> ``act{i}``; under ``nn.remat`` when ``remat``, so
        backpropagation stores only the block's input and recomputes the rest."""
        fn = _block_fn
        if self.remat:
            fn = nn.remat(_block_fn, static_argnums=tuple(range(2, 12)))
        return fn(self, x, i, width, conv, train, T, constant, sample_noise, stateful, kernel, stride)


def _conv(mdl: _SNNBase, x: Array, suffix: str | int, width: int, kernel: int = 3, stride: int = 1) -> Array:
    return nn.Conv(width, (kernel, kernel), strides=(stride, stride), padding="SAME",
                   use_bias=mdl._layer_bias, dtype=mdl.dtype, name=f"conv{suffix}")(x)


def _block_fn(mdl: _SNNBase, x: Array, i: int | str, width: int, conv: bool, train: bool, T: int,
              constant: bool, sample_noise: bool | None, stateful: bool, kernel: int = 3,
              stride: int = 1) -> Array:
    if conv:
        x = _conv(mdl, x, i, width, kernel, stride)
    else:
        x = nn.Dense(width, use_bias=mdl._layer_bias, dtype=mdl.dtype, name=f"dense{i}")(x)
    x = mdl._norm(x, i, train)
    return mdl._act(x, i, dict(timesteps=T, constant=constant, train=train, sample_noise=sample_noise,
                               stateful=stateful))


class MLP(_SNNBase):
    """Dense-BN-spike blocks and a non-spiking dense readout: ``[B, ...] -> [B, K]``."""

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode."""
        T = _check_mode(self.activation, timesteps, stateful)
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        expanded = False
        for i, width in enumerate(self.hidden):
            x = self._block(x, i, width, False, train, T, not expanded, sample_noise, stateful)
            expanded = expanded or T > 1
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T if expanded else 1).astype(jnp.float32)


class CNN(_SNNBase):
    """Conv3x3-BN-spike blocks, pooling after chosen blocks, a non-spiking dense readout.

    Input ``[B, H, W, C]`` (channels-last); logits ``[B, K]``. ``pool="max"`` on spikes is an OR
    per time step; ``"avg"`` is exact on rates.
    """

    channels: Sequence[int] = (16, 32, 64, 64)
    pool_after: Sequence[int] = (0, 2)
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode."""
        T = _check_mode(self.activation, timesteps, stateful)
        if self.pool not in POOLS:
            raise ValueError(f"pool={self.pool!r} is invalid; choose one of {list(POOLS)}")
        if x.ndim != 4:
            raise ValueError(f"CNN expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x = x.astype(self.dtype)
        expanded = False
        for i, width in enumerate(self.channels):
            x = self._block(x, i, width, True, train, T, not expanded, sample_noise, stateful)
            expanded = expanded or T > 1
            if i in self.pool_after:
                x = pool2d(x, self.pool, 2, 2)
        x = flatten_features(x, T if expanded else 1)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T if expanded else 1).astype(jnp.float32)


def _residual_fn(mdl: _SNNBase, x: Array, name: str, width: int, stride: int, bottleneck: bool,
                 train: bool, T: int, sample_noise: bool | None, stateful: bool) -> Array:
    """A ResNet block on currents: ``act(bn(conv(...)) + shortcut(x))`` (docs/method.md section 4)."""
    mode = dict(timesteps=T, constant=False, train=train, sample_noise=sample_noise, stateful=stateful)
    if bottleneck:
        h = mdl._act(mdl._norm(_conv(mdl, x, f"{name}_a", width, 1), f"{name}_a", train), f"{name}_a", mode)
        h = mdl._act(mdl._norm(_conv(mdl, h, f"{name}_b", width, 3, stride), f"{name}_b", train), f"{name}_b", mode)
        out_width = 4 * width
        h = mdl._norm(_conv(mdl, h, f"{name}_c", out_width, 1), f"{name}_c", train)
    else:
        h = mdl._act(mdl._norm(_conv(mdl, x, f"{name}_a", width, 3, stride), f"{name}_a", train), f"{name}_a", mode)
        out_width = width
        h = mdl._norm(_conv(mdl, h, f"{name}_b", width, 3), f"{name}_b", train)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_width:
        shortcut = mdl._norm(_conv(mdl, x, f"{name}_sc", out_width, 1, stride), f"{name}_sc", train)
    return mdl._act(h + shortcut, f"{name}_out", mode)


class VGG(_SNNBase):
    """Spiking VGG for 32x32 inputs: conv3x3-BN-spike stages, average pooling after each stage,
    one hidden dense layer and a non-spiking readout. ``stages`` lists each stage's widths."""

    stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
    hidden: int = 512
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode."""
        T = _check_mode(self.activation, timesteps, stateful)
        if x.ndim != 4:
            raise ValueError(f"VGG expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x, i, expanded = x.astype(self.dtype), 0, False
        for widths in self.stages:
            for w in widths:
                x = self._block(x, i, w, True, train, T, not expanded, sample_noise, stateful)
                expanded, i = expanded or T > 1, i + 1
            x = pool2d(x, self.pool, 2, 2)
        x = flatten_features(x, T)
        x = self._block(x, i, self.hidden, False, train, T, not expanded, sample_noise, stateful)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T).astype(jnp.float32)


class ResNet(_SNNBase):
    """Spiking ResNet; residual additions on currents before the neuron (docs/method.md section 4).

    ``stem="cifar"``: conv3x3 for 32x32 inputs; ``"imagenet"``: conv7x7 stride 2 and a 3x3 max
    pool. ``bottleneck`` blocks (1x1-3x3-1x1, width x4) for ResNet-50. Global average pooling and
    a non-spiking readout.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    bottleneck: bool = False
    stem: str = "cifar"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None, stateful: bool = False) -> Array:
        """Logits ``[B, K]``, averaged over ``timesteps`` in multi-step mode."""
        T = _check_mode(self.activation, timesteps, stateful)
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images [B, H, W, C]; got shape {tuple(x.shape)}")
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = self._block(x, 0, self.widths[0], True, train, T, True, sample_noise, stateful, 7, 2)
            x = pool2d(x, "max", 3, 2, "SAME")
        else:
            x = self._block(x, 0, self.widths[0], True, train, T, True, sample_noise, stateful)
        fn = _residual_fn
        if self.remat:
            fn = nn.remat(_residual_fn, static_argnums=tuple(range(2, 10)))
        for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(n):
                stride = 2 if b == 0 and s > 0 else 1
                x = fn(self, x, f"s{s}b{b}", w, stride, self.bottleneck, train, T, sample_noise, stateful)
        x = jnp.mean(x, axis=(-3, -2))  # global average pooling: [(T,) B, H, W, C] -> [(T,) B, C]
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="readout")(x)
        return average_readout(self, logits, T).astype(jnp.float32)


def vgg11(**kw) -> VGG:
    """VGG-11 for 32x32 inputs."""
    return VGG(stages=((64,), (128,), (256, 256), (512, 512), (512, 512)), **kw)


def vgg16(**kw) -> VGG:
    """VGG-16 for 32x32 inputs."""
    return VGG(stages=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)), **kw)


def resnet18(**kw) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2); ``stem`` cifar (default) or imagenet."""
    return ResNet(stage_sizes=(2, 2, 2, 2), **kw)


def resnet20(**kw) -> ResNet:
    """ResNet-20 for CIFAR (basic blocks 3-3-3, widths 16-32-64)."""
    return ResNet(stage_sizes=(3, 3, 3), widths=(16, 32, 64), **kw)


def resnet34(**kw) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3)."""
    return ResNet(stage_sizes=(3, 4, 6, 3), **kw)


def resnet50(**kw) -> ResNet:
    """ResNet-50 (bottleneck blocks 3-4-6-3, widths x4)."""
    return ResNet(stage_sizes=(3, 4, 6, 3), bottleneck=True, **kw)


MODELS = {"mlp": MLP, "cnn": CNN, "vgg11": vgg11, "vgg16": vgg16, "resnet18": resnet18,
          "resnet20": resnet20, "resnet34": resnet34, "resnet50": resnet50}
