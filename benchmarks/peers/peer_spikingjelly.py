"""SpikingJelly: the demo CNN, and ResNet-18, in multi-step mode (``step_mode="m"``).

Conv/BN/pool/flatten/dense run on ``[T*B, ...]`` inside ``layer.SeqToANNContainer``;
``IFNode(v_reset=None)`` with reset value 0.5; ``functional.reset_net`` before every call.
"""

from __future__ import annotations

import functools
from typing import Any

from .common import (
    BN_EPS,
    BN_MOMENTUM_TORCH,
    CHANNELS,
    FEATURES,
    NUM_CLASSES,
    POOL_AFTER,
    RESNET18_WIDTHS,
    THRESHOLD,
    V_INIT,
    version,
)
from .torch_common import torch_bench

NAME = DIST = "spikingjelly"
REQUIRES = ("torch", "spikingjelly.activation_based")
INSTALL = "pip install torch==2.13.0 && pip install -c <(echo torch==2.13.0+cpu) spikingjelly"
LAYOUT = "multi-step m mode, stateless layers on [T*B] (SeqToANNContainer), IFNode(v_reset=None), ATan"


def _if_node() -> Any:
    """A multi-step IF neuron: threshold 1, soft reset, ``v_0 = 0.5``, arctan surrogate."""
    from spikingjelly.activation_based import neuron, surrogate

    node = neuron.IFNode(v_threshold=THRESHOLD, v_reset=None, surrogate_function=surrogate.ATan(), step_mode="m")
    node.set_reset_value("v", V_INIT)  # a float: broadcast to the input's shape on the next call
    return node


def build_spikingjelly() -> Any:
    """The CNN as a SpikingJelly multi-step ``nn.Sequential``: ``[T, B, 1, 28, 28] -> [T, B, 10]``."""
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer

    mods: list[nn.Module] = []
    cin = 1
    for i, width in enumerate(CHANNELS):
        mods += [layer.SeqToANNContainer(nn.Conv2d(cin, width, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(width, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)),
                 _if_node()]
        if i in POOL_AFTER:
            mods.append(layer.SeqToANNContainer(nn.AvgPool2d(2, 2)))
        cin = width
    mods.append(layer.SeqToANNContainer(nn.Flatten(), nn.Linear(FEATURES, NUM_CLASSES)))
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    return net


def sj_forward(net: Any, x: Any, T: int) -> Any:
    """Logits ``[B, 10]`` of a SpikingJelly net: reset, repeat the image T times, average."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    return net(x_seq).mean(0)


def bench(batch: int, timesteps: tuple[int, ...], train_timesteps: int, repeats: int, warmup: int) -> dict:
    """Time the CNN: eval/no-grad inference per T, and one Adam BPTT step."""
    import torch

    torch.manual_seed(0)
    net = build_spikingjelly()
    return torch_bench(NAME, version(DIST), net, lambda x, T: sj_forward(net, x, T), LAYOUT, batch, timesteps,
                       train_timesteps, repeats, warmup)


def network(batch: int, timesteps: int) -> tuple[Any, int, list, int]:
    """The CNN on random images: ``(logits, learnable parameters, spikes of each IF call, IF layers)``."""
    import torch
    from spikingjelly.activation_based import neuron

    torch.manual_seed(0)
    net = build_spikingjelly()
    net.eval()
    x = torch.randn(batch, 1, 28, 28)
    spikes: list = []
    with torch.no_grad():
        hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o))
                 for m in net.modules() if isinstance(m, neuron.IFNode)]
        out = sj_forward(net, x, timesteps)
        for h in hooks:
            h.remove()
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return out.numpy(), n_params, [s.numpy() for s in spikes], len(spikes)


def build_spikingjelly_resnet18() -> Any:
    """ResNet-18 (cifar stem) in SpikingJelly's multi-step mode: ``[T, B, 3, 32, 32] -> [T, B, 10]``.

    Like ``noisesnn_jax.models.resnet18``: conv3x3(3->64) BN IF, four stages of two basic blocks
    (64-128-256-512, stride 2 from the second stage), each block ``IF(bn(conv(IF(bn(conv x)))) +
    shortcut(x))`` with a 1x1 conv + BN shortcut where the shape changes, global average pooling and
    a dense readout. Stride-2 convolutions pad 1 on each side (torch's own; ours pads SAME).
    """
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer

    def conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Module:
        return layer.SeqToANNContainer(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False),
                                       nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH))

    class Basic(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            self.a, self.act_a = conv_bn(cin, width, 3, stride), _if_node()
            self.b = conv_bn(width, width, 3, 1)
            self.shortcut = conv_bn(cin, width, 1, stride) if (stride != 1 or cin != width) else None
            self.act_out = _if_node()

        def forward(self, x: Any) -> Any:
            h = self.b(self.act_a(self.a(x)))
            return self.act_out(h + (x if self.shortcut is None else self.shortcut(x)))

    mods: list[nn.Module] = [conv_bn(3, 64, 3, 1), _if_node()]
    cin = 64
    for s, w in enumerate(RESNET18_WIDTHS):
        for b in range(2):
            mods.append(Basic(cin, w, 2 if (b == 0 and s > 0) else 1))
            cin = w
    mods.append(layer.SeqToANNContainer(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, NUM_CLASSES)))
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    return net


def resnet18_runners(batch: int, timesteps: tuple[int, ...] = (4, 8)) -> tuple[dict, dict]:
    """ResNet-18 (32x32x3) inference: ``({T: run once}, {"version", "num_params", "note"})``."""
    import torch

    torch.manual_seed(0)
    net = build_spikingjelly_resnet18().eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(T: int) -> None:
        with torch.no_grad():
            sj_forward(net, x, T)

    info = {"version": version(DIST), "num_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "note": f"torch {torch.__version__}, {torch.get_num_threads()} threads, eager, multi-step m mode"}
    return {int(T): functools.partial(run, int(T)) for T in timesteps}, info
