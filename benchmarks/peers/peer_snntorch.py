"""snnTorch: the demo CNN with ``snn.Leaky(beta=1.0, reset_mechanism="subtract")`` (an IF neuron)
in a Python loop over time, every layer once per step.

Its returned ``mem`` is the pre-reset potential (the reset is applied at the next step), so the
spikes are those of our IF neuron.
"""

from __future__ import annotations

from typing import Any

from .common import BN_EPS, BN_MOMENTUM_TORCH, CHANNELS, FEATURES, NUM_CLASSES, POOL_AFTER, THRESHOLD, V_INIT, version
from .torch_common import torch_bench

NAME = DIST = "snntorch"
REQUIRES = ("torch", "snntorch")
INSTALL = "pip install torch==2.13.0 && pip install -c <(echo torch==2.13.0+cpu) snntorch"
LAYOUT = "Python loop over T, snn.Leaky(beta=1, subtract) = IF, atan"


def build_snntorch() -> Any:
    """The CNN as a ``torch.nn.Module`` with snnTorch IF (Leaky, beta=1) neurons, looped over time."""
    import snntorch
    import torch
    import torch.nn as nn
    from snntorch import surrogate

    class SnnTorchCNN(nn.Module):
        """``forward(x [B,1,28,28], T) -> logits [B, 10]``; ``record`` collects each layer's spikes."""

        def __init__(self) -> None:
            super().__init__()
            cins = (1,) + CHANNELS[:-1]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(cins, CHANNELS))
            self.bns = nn.ModuleList(nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH) for c in CHANNELS)
            self.lifs = nn.ModuleList(
                snntorch.Leaky(beta=1.0, threshold=THRESHOLD, reset_mechanism="subtract",
                               spike_grad=surrogate.atan()) for _ in CHANNELS)
            self.pool = nn.AvgPool2d(2, 2)
            self.readout = nn.Linear(FEATURES, NUM_CLASSES)

        def forward(self, x: torch.Tensor, T: int, record: list | None = None) -> torch.Tensor:
            mems: list[torch.Tensor | None] = [None] * len(CHANNELS)
            total = 0.0
            for _ in range(T):
                h = x
                for i in range(len(CHANNELS)):
                    cur = self.bns[i](self.convs[i](h))
                    if mems[i] is None:
                        mems[i] = torch.full_like(cur, V_INIT)
                    h, mems[i] = self.lifs[i](cur, mems[i])
                    if record is not None:
                        record.append(h)
                    if i in POOL_AFTER:
                        h = self.pool(h)
                total = total + self.readout(h.flatten(1))
            return total / T

    return SnnTorchCNN()


def bench(batch: int, timesteps: tuple[int, ...], train_timesteps: int, repeats: int, warmup: int) -> dict:
    """Time the CNN: eval/no-grad inference per T, and one Adam BPTT step."""
    import torch

    torch.manual_seed(0)
    net = build_snntorch()
    return torch_bench(NAME, version(DIST), net, lambda x, T: net(x, T), LAYOUT, batch, timesteps,
                       train_timesteps, repeats, warmup)


def network(batch: int, timesteps: int) -> tuple[Any, int, list, int]:
    """The CNN on random images: ``(logits, learnable parameters, spikes of each layer and step, layers)``."""
    import torch

    torch.manual_seed(0)
    net = build_snntorch()
    net.eval()
    x = torch.randn(batch, 1, 28, 28)
    spikes: list = []
    with torch.no_grad():
        out = net(x, timesteps, record=spikes)
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return out.numpy(), n_params, [s.numpy() for s in spikes], len(spikes) // timesteps
