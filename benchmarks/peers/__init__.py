"""The demo spiking CNN written in peer SNN libraries, timed on the CPU for ``benchmarks/bench.py``.

    python -m benchmarks.peers          # every installed peer at batch 64, JSON on stdout

The network matches ``noisesnn_jax.models.CNN`` defaults (28x28x1 input, 10 classes)::

    conv3x3(1->16) BN IF avgpool2 | conv3x3(16->32) BN IF | conv3x3(32->64) BN IF avgpool2 |
    conv3x3(64->64) BN IF | flatten(7*7*64) dense(10), logits averaged over T

Convolutions have no bias ("same" padding); BN has eps 1e-5 and running-average momentum 0.1
(torch convention, = flax 0.9). IF neuron: threshold 1.0, soft reset (subtract), v_0 = 0.5,
arctan surrogate gradient for BPTT. Direct input coding: the image is fed at every time step.

Each peer is a module of this folder (``peer_spikingjelly``, ``peer_snntorch``, ``peer_spyx``:
how its library writes the network, and why), registered in :data:`_PEERS`; ``common`` holds the
network's settings and ``torch_common`` what the two PyTorch peers share. A peer module has
``REQUIRES`` (the modules it imports), ``DIST``, ``INSTALL``, optionally ``api_problem()``, and
``bench(batch, timesteps, train_timesteps, repeats, warmup)`` and ``network(batch, timesteps)``.

Install (CPU torch only; without the constraint pip pulls a CUDA torch)::

    pip install torch==2.13.0
    pip install -c <(echo torch==2.13.0+cpu) spikingjelly snntorch spyx
"""

from __future__ import annotations

import json

from . import peer_snntorch, peer_spikingjelly, peer_spyx
from .common import (  # noqa: F401 - the network's settings, importable from here
    BN_EPS,
    BN_MOMENTUM_TORCH,
    CHANNELS,
    FEATURES,
    LEARNING_RATE,
    NUM_CLASSES,
    NUM_PARAMS,
    POOL_AFTER,
    RESNET18_WIDTHS,
    THRESHOLD,
    V_INIT,
    import_problem,
    network_summary,
    resnet18_params,
)
from .peer_snntorch import build_snntorch  # noqa: F401
from .peer_spikingjelly import build_spikingjelly, build_spikingjelly_resnet18  # noqa: F401
from .peer_spyx import build_spyx  # noqa: F401
from .torch_common import torch_relu_runner  # noqa: F401

# The peers by name, in the order they are benchmarked and reported.
_PEERS = {"spikingjelly": peer_spikingjelly, "snntorch": peer_snntorch, "spyx": peer_spyx}
PEERS = tuple(_PEERS)


def _reason(name: str) -> str | None:
    """None if ``name`` imports, else a one-line reason."""
    return import_problem(_PEERS[name])


def available() -> dict[str, str | None]:
    """Each peer's name -> None if it can be benchmarked here, else a one-line reason."""
    return {name: _reason(name) for name in PEERS}


def bench_peer(name: str, batch: int, timesteps: tuple[int, ...] = (4, 8), train_timesteps: int = 4,
               repeats: int = 7, warmup: int = 2) -> dict:
    """Median seconds of the CNN's inference per T and of one BPTT Adam step in peer ``name``."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {list(PEERS)}")
    if batch < 1 or repeats < 1 or warmup < 0 or train_timesteps < 1 or any(T < 1 for T in timesteps):
        raise ValueError("batch, repeats, train_timesteps and every T must be >= 1; warmup >= 0")
    reason = _reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    return _PEERS[name].bench(batch, tuple(int(T) for T in timesteps), train_timesteps, repeats, warmup)


def check_peer(name: str, batch: int = 2, timesteps: int = 2) -> dict:
    """What peer ``name``'s network computes: logits shape, learnable parameter count, spike values."""
    reason = _reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    return network_summary(*_PEERS[name].network(batch, timesteps))


def resnet18_runners(name: str, batch: int, timesteps: tuple[int, ...] = (4, 8)) -> tuple[dict, dict]:
    """ResNet-18 (32x32x3) inference in peer ``name`` (SpikingJelly only): ``({T: run once},
    {"version", "num_params", "note"})``, for ``bench.py`` to time beside its own runs."""
    if name != "spikingjelly":
        raise ValueError(f"the ResNet-18 case is written for spikingjelly only, not {name!r}")
    reason = _reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    return peer_spikingjelly.resnet18_runners(batch, timesteps)


def main(batch: int = 64) -> dict:
    """Benchmark every available peer at ``batch``; print and return the results as JSON."""
    results: dict[str, dict] = {}
    for name, reason in available().items():
        if reason is not None:
            results[name] = {"skipped": reason}
            continue
        try:
            results[name] = bench_peer(name, batch)
        except Exception as e:  # one peer's failure must not hide the others
            results[name] = {"skipped": f"{type(e).__name__}: {e}"}
    print(json.dumps(results, indent=1))
    return results
