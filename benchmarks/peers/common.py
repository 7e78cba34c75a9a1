"""What every peer shares: the demo CNN's settings, its parameter counts, and the checks of a peer's
install and of what its network computes."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
from typing import Any

CHANNELS = (16, 32, 64, 64)
POOL_AFTER = (0, 2)
NUM_CLASSES = 10
THRESHOLD = 1.0
V_INIT = 0.5
BN_EPS = 1e-5
BN_MOMENTUM_TORCH = 0.1  # running = (1 - m) * running + m * batch; flax momentum 0.9
LEARNING_RATE = 1e-3
FEATURES = 7 * 7 * CHANNELS[-1]
# learnable parameters: conv kernels, BN scale+shift, readout weights+bias
NUM_PARAMS = (sum(9 * cin * cout for cin, cout in zip((1,) + CHANNELS[:-1], CHANNELS))
              + 2 * sum(CHANNELS) + FEATURES * NUM_CLASSES + NUM_CLASSES)

# ResNet-18 for 32x32 inputs (the second network of the inference table)
RESNET18_WIDTHS = (64, 128, 256, 512)


def resnet18_params(num_classes: int = NUM_CLASSES) -> int:
    """Learnable parameters of ``noisesnn_jax.models.resnet18`` (cifar stem, 3 input channels):
    bias-free convolutions with BN scale and shift, a dense readout with bias."""
    def conv_bn(cin: int, cout: int, k: int) -> int:
        return k * k * cin * cout + 2 * cout

    n, cin = conv_bn(3, 64, 3), 64
    for w in RESNET18_WIDTHS:
        for _ in range(2):
            n += conv_bn(cin, w, 3) + conv_bn(w, w, 3)
            if cin != w:
                n += conv_bn(cin, w, 1)
            cin = w
    return n + cin * num_classes + num_classes


def import_problem(peer: Any) -> str | None:
    """None if a peer module's ``REQUIRES`` import (and its ``api_problem()``, where it has one,
    finds nothing), else a one-line reason with ``INSTALL``."""
    for mod in peer.REQUIRES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            return f"not installed ({e.name}): {peer.INSTALL}"
        except Exception as e:  # an installed peer that cannot import next to our jax/flax/torch
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return f"import {mod} failed: {type(e).__name__}: {msg}"[:300]
    api_problem = getattr(peer, "api_problem", None)
    return api_problem() if api_problem is not None else None


def version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def network_summary(out: Any, n_params: int, spikes: list, spike_layers: int) -> dict:
    """What a peer's network computed: its logits (an array), learnable parameters and the spikes
    of its IF layers (arrays), as ``check_peer`` reports them."""
    values = sorted({float(v) for s in spikes for v in set(s.ravel().tolist())})
    return {"output_shape": tuple(out.shape), "finite": bool(math.isfinite(float(abs(out).sum()))),
            "num_params": int(n_params), "expected_params": NUM_PARAMS, "spike_values": values,
            "spike_layers": spike_layers,
            "spike_rate": float(sum(s.sum() for s in spikes) / max(1, sum(s.size for s in spikes)))}
