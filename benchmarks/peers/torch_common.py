"""What the two PyTorch peers (SpikingJelly, snnTorch) share: their timing, and the same CNN with
ReLU in plain PyTorch."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from noisesnn_jax import timing

from .common import BN_EPS, BN_MOMENTUM_TORCH, CHANNELS, FEATURES, LEARNING_RATE, NUM_CLASSES, POOL_AFTER


def torch_bench(library: str, version: str, net: Any, forward: Callable[[Any, int], Any], layout: str, batch: int,
                timesteps: tuple[int, ...], train_timesteps: int, repeats: int, warmup: int) -> dict:
    """Time a torch peer's ``net`` (built after ``torch.manual_seed(0)``): eval/no-grad inference
    ``forward(x, T)`` per T, and one Adam BPTT step."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    inference = {}
    net.eval()
    with torch.no_grad():
        for T in timesteps:
            inference[T] = timing.measure({"case": lambda T=T: forward(x, T)}, repeats, warmup)["case"]

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x, train_timesteps), y)
        loss.backward()
        opt.step()

    net.train()
    train = timing.measure({"case": train_step}, repeats, warmup)["case"]
    # torch's OpenMP pool spins while it waits: on a busy CPU its default threads can run element-wise
    # ops ~10x slower than one thread, so the wait policy is part of the record
    note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads "
            f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), eager; {layout}; "
            f"input [B,1,28,28] fed every step")
    return {"library": library, "version": version, "inference_s": inference, "train_step_s": train,
            "repeats": repeats, "note": note}


def torch_relu_runner(batch: int) -> tuple[Any, str]:
    """One Adam step of the same CNN with ReLU in plain PyTorch (no SNN library): ``(run once, note)``.
    At ``batch = T x B`` it is the convolution work of a BPTT step, so it separates the convolution
    kernels (oneDNN here, XLA's in JAX) from the spiking part."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    mods: list[nn.Module] = []
    cin = 1
    for i, width in enumerate(CHANNELS):
        mods += [nn.Conv2d(cin, width, 3, padding=1, bias=False),
                 nn.BatchNorm2d(width, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH), nn.ReLU()]
        if i in POOL_AFTER:
            mods.append(nn.AvgPool2d(2, 2))
        cin = width
    net = nn.Sequential(*mods, nn.Flatten(), nn.Linear(FEATURES, NUM_CLASSES)).train()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28, generator=gen), torch.randint(0, NUM_CLASSES, (batch,), generator=gen)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return run, f"torch {torch.__version__}, {torch.get_num_threads()} threads, eager"
