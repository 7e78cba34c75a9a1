"""The demo spiking CNN written in peer SNN libraries, timed on the CPU for ``benchmarks/bench.py``.

    python benchmarks/peers.py          # every installed peer at batch 64, JSON on stdout

The network matches ``noisesnn_jax.models.CNN`` defaults (28x28x1 input, 10 classes)::

    conv3x3(1->16) BN IF avgpool2 | conv3x3(16->32) BN IF | conv3x3(32->64) BN IF avgpool2 |
    conv3x3(64->64) BN IF | flatten(7*7*64) dense(10), logits averaged over T

Convolutions have no bias ("same" padding); BN has eps 1e-5 and running-average momentum 0.1
(torch convention, = flax 0.9). IF neuron: threshold 1.0, soft reset (subtract), v_0 = 0.5,
arctan surrogate gradient for BPTT. Direct input coding: the image is fed at every time step.

* SpikingJelly: multi-step mode (``step_mode="m"``); conv/BN/pool/flatten/dense run on
  ``[T*B, ...]`` inside ``layer.SeqToANNContainer``; ``IFNode(v_reset=None)`` with reset value
  0.5; ``functional.reset_net`` before every call.
* snnTorch: ``snn.Leaky(beta=1.0, reset_mechanism="subtract")`` (an IF neuron) in a Python loop
  over time, every layer once per step. Its returned ``mem`` is the pre-reset potential (the
  reset is applied at the next step), so the spikes are those of our IF neuron.
* Spyx (JAX/flax.nnx): stateless layers on ``[T*B, ...]``, each IF layer scanned over time with
  ``spyx.nn.run`` (``jax.lax.scan``), arctan surrogate from ``spyx.axn``. ``spyx.nn.IF`` fires on
  the potential *before* adding the step's input (one step of delay per layer, so with 4 layers
  nothing reaches the readout at T <= 4); ``SpyxIF`` (in :func:`_spyx_classes`) subclasses it to fire on ``v + x`` of
  the same step, like the other two peers and noisesnn-jax.

Install (CPU torch only; without the constraint pip pulls a CUDA torch)::

    pip install torch==2.13.0
    pip install -c <(echo torch==2.13.0+cpu) spikingjelly snntorch spyx
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import math
import os
from typing import Any

from noisesnn_jax import timing

PEERS = ("spikingjelly", "snntorch", "spyx")

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

_MODULES = {"spikingjelly": ("torch", "spikingjelly.activation_based"),
            "snntorch": ("torch", "snntorch"),
            "spyx": ("jax", "flax.nnx", "optax", "spyx.nn", "spyx.axn")}
_DISTS = {"spikingjelly": "spikingjelly", "snntorch": "snntorch", "spyx": "spyx"}
_INSTALL = {"spikingjelly": "pip install torch==2.13.0 && pip install -c <(echo torch==2.13.0+cpu) spikingjelly",
            "snntorch": "pip install torch==2.13.0 && pip install -c <(echo torch==2.13.0+cpu) snntorch",
            "spyx": "pip install spyx"}


def _reason(name: str) -> str | None:
    """None if ``name`` imports, else a one-line reason."""
    for mod in _MODULES[name]:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            return f"not installed ({e.name}): {_INSTALL[name]}"
        except Exception as e:  # an installed peer that cannot import next to our jax/flax/torch
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return f"import {mod} failed: {type(e).__name__}: {msg}"[:300]
    if name == "spyx":
        import spyx.nn
        if not hasattr(spyx.nn, "IF") or not hasattr(spyx.nn, "run"):
            return "spyx has no spyx.nn.IF / spyx.nn.run (pre-1.0 Haiku API); needs spyx>=1.0 (flax.nnx)"
    return None


def available() -> dict[str, str | None]:
    """Each peer's name -> None if it can be benchmarked here, else a one-line reason."""
    return {name: _reason(name) for name in PEERS}


def _version(name: str) -> str:
    """The installed distribution version of a peer."""
    try:
        return importlib.metadata.version(_DISTS[name])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------
# PyTorch peers


def build_spikingjelly() -> Any:
    """The CNN as a SpikingJelly multi-step ``nn.Sequential``: ``[T, B, 1, 28, 28] -> [T, B, 10]``."""
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def if_node() -> nn.Module:
        node = neuron.IFNode(v_threshold=THRESHOLD, v_reset=None, surrogate_function=surrogate.ATan(),
                             step_mode="m")
        node.set_reset_value("v", V_INIT)  # a float: broadcast to the input's shape on the next call
        return node

    mods: list[nn.Module] = []
    cin = 1
    for i, width in enumerate(CHANNELS):
        mods += [layer.SeqToANNContainer(nn.Conv2d(cin, width, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(width, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)),
                 if_node()]
        if i in POOL_AFTER:
            mods.append(layer.SeqToANNContainer(nn.AvgPool2d(2, 2)))
        cin = width
    mods.append(layer.SeqToANNContainer(nn.Flatten(), nn.Linear(FEATURES, NUM_CLASSES)))
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    return net


def _sj_forward(net: Any, x: Any, T: int) -> Any:
    """Logits ``[B, 10]`` of the SpikingJelly net: reset, repeat the image T times, average."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    return net(x_seq).mean(0)


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


def _torch_bench(name: str, batch: int, timesteps: tuple[int, ...], train_timesteps: int, repeats: int,
                 warmup: int) -> dict:
    """Time a torch peer: eval/no-grad inference per T, and one Adam BPTT step."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if name == "spikingjelly":
        net = build_spikingjelly()
        forward = lambda x, T: _sj_forward(net, x, T)
    else:
        net = build_snntorch()
        forward = lambda x, T: net(x, T)
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
    layout = ("multi-step m mode, stateless layers on [T*B] (SeqToANNContainer), IFNode(v_reset=None), ATan"
              if name == "spikingjelly" else
              "Python loop over T, snn.Leaky(beta=1, subtract) = IF, atan")
    # torch's OpenMP pool spins while it waits: on a busy CPU its default threads can run element-wise
    # ops ~10x slower than one thread, so the wait policy is part of the record
    note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads "
            f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), eager; {layout}; "
            f"input [B,1,28,28] fed every step")
    return {"library": name, "version": _version(name), "inference_s": inference, "train_step_s": train,
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


# ------------------------------------------------------------------------------------------------
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


def build_spikingjelly_resnet18() -> Any:
    """ResNet-18 (cifar stem) in SpikingJelly's multi-step mode: ``[T, B, 3, 32, 32] -> [T, B, 10]``.

    Like ``noisesnn_jax.models.resnet18``: conv3x3(3->64) BN IF, four stages of two basic blocks
    (64-128-256-512, stride 2 from the second stage), each block ``IF(bn(conv(IF(bn(conv x)))) +
    shortcut(x))`` with a 1x1 conv + BN shortcut where the shape changes, global average pooling and
    a dense readout. Stride-2 convolutions pad 1 on each side (torch's own; ours pads SAME).
    """
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def if_node() -> nn.Module:
        node = neuron.IFNode(v_threshold=THRESHOLD, v_reset=None, surrogate_function=surrogate.ATan(),
                             step_mode="m")
        node.set_reset_value("v", V_INIT)
        return node

    def conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Module:
        return layer.SeqToANNContainer(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False),
                                       nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH))

    class Basic(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            self.a, self.act_a = conv_bn(cin, width, 3, stride), if_node()
            self.b = conv_bn(width, width, 3, 1)
            self.shortcut = conv_bn(cin, width, 1, stride) if (stride != 1 or cin != width) else None
            self.act_out = if_node()

        def forward(self, x: Any) -> Any:
            h = self.b(self.act_a(self.a(x)))
            return self.act_out(h + (x if self.shortcut is None else self.shortcut(x)))

    mods: list[nn.Module] = [conv_bn(3, 64, 3, 1), if_node()]
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


def resnet18_runners(name: str, batch: int, timesteps: tuple[int, ...] = (4, 8)) -> tuple[dict, dict]:
    """ResNet-18 (32x32x3) inference in peer ``name`` (SpikingJelly only): ``({T: run once},
    {"version", "num_params", "note"})``, for ``bench.py`` to time beside its own runs."""
    if name != "spikingjelly":
        raise ValueError(f"the ResNet-18 case is written for spikingjelly only, not {name!r}")
    reason = _reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    import torch

    torch.manual_seed(0)
    net = build_spikingjelly_resnet18().eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(T: int) -> None:
        with torch.no_grad():
            _sj_forward(net, x, T)

    info = {"version": _version(name), "num_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "note": f"torch {torch.__version__}, {torch.get_num_threads()} threads, eager, multi-step m mode"}
    return {int(T): functools.partial(run, int(T)) for T in timesteps}, info


# ------------------------------------------------------------------------------------------------
# Spyx (JAX, flax.nnx)


@functools.lru_cache(maxsize=1)
def _spyx_classes() -> tuple[type, type]:
    """The Spyx IF neuron (same-step firing) and the CNN module, defined once per process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import spyx.axn
    import spyx.nn
    from flax import nnx

    class SpyxIF(spyx.nn.IF):
        """``spyx.nn.IF`` firing on this step's potential: ``m = v + x; s = H(m - theta); v = m - theta*s``."""

        def __call__(self, x: jax.Array, V: jax.Array) -> tuple[jax.Array, jax.Array]:
            m = V + x
            s = self.spike(m - self.threshold)
            return s, m - s * self.threshold

        def initial_state(self, batch_size: int) -> jax.Array:
            return jnp.full((batch_size,) + tuple(self.hidden_shape), V_INIT, jnp.float32)

    class SpyxCNN(nnx.Module):
        """Stateless layers on ``[T*B, ...]``; each IF layer scanned over time by ``spyx.nn.run``."""

        def __init__(self, seed: int = 0) -> None:
            rngs, host = nnx.Rngs(seed), np.random.default_rng(seed)

            def lecun_normal(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
                # flax's default (truncated normal, fan-in), drawn on the host: an eager jax.random
                # initializer compiles once per shape, seconds on a loaded CPU
                w = host.standard_normal(shape)
                while (bad := np.abs(w) > 2.0).any():
                    w[bad] = host.standard_normal(int(bad.sum()))
                return jnp.asarray(w / math.sqrt(math.prod(shape[:-1])) / 0.87962566103423978, dtype)

            cins = (1,) + CHANNELS[:-1]
            self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", use_bias=False, kernel_init=lecun_normal,
                                            rngs=rngs) for a, b in zip(cins, CHANNELS)])
            self.bns = nnx.List([nnx.BatchNorm(c, momentum=1.0 - BN_MOMENTUM_TORCH, epsilon=BN_EPS, rngs=rngs)
                                 for c in CHANNELS])
            size, shapes = 28, []
            for i, c in enumerate(CHANNELS):
                shapes.append((size, size, c))
                size = size // 2 if i in POOL_AFTER else size
            self.ifs = nnx.List([SpyxIF(s, threshold=THRESHOLD, activation=spyx.axn.arctan()) for s in shapes])
            self.readout = nnx.Linear(FEATURES, NUM_CLASSES, kernel_init=lecun_normal, rngs=rngs)

        def __call__(self, x: jax.Array, T: int, record: list | None = None) -> jax.Array:
            B = x.shape[0]
            h = jnp.broadcast_to(x[None], (T,) + x.shape).reshape((T * B,) + x.shape[1:])
            for i in range(len(CHANNELS)):
                cur = self.bns[i](self.convs[i](h))
                spikes, _ = spyx.nn.run(self.ifs[i], cur.reshape((T, B) + cur.shape[1:]))
                if record is not None:
                    record.append(spikes)
                h = spikes.reshape(cur.shape)
                if i in POOL_AFTER:
                    h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
            logits = self.readout(h.reshape(T * B, -1))
            return logits.reshape(T, B, NUM_CLASSES).mean(0)

    return SpyxIF, SpyxCNN


def build_spyx(seed: int = 0) -> Any:
    """The CNN as a flax.nnx Module with Spyx IF neurons: ``(x [B,28,28,1], T) -> logits [B, 10]``."""
    return _spyx_classes()[1](seed)


def _spyx_bench(batch: int, timesteps: tuple[int, ...], train_timesteps: int, repeats: int, warmup: int) -> dict:
    """Time Spyx: jitted eval inference per T, and one jitted Adam BPTT step (buffers donated)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch,)), jnp.int32)

    model = build_spyx()
    model.eval()  # BatchNorm on running averages; the graphdef keeps the mode
    graphdef, state = nnx.split(model)
    inference = {}
    for T in timesteps:
        fn = jax.jit(lambda state, x, T=T: nnx.merge(graphdef, state)(x, T))
        inference[T] = timing.measure({"case": lambda fn=fn: jax.block_until_ready(fn(state, x))}, repeats, warmup)["case"]

    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = optax.adam(LEARNING_RATE)

    def loss_fn(variables: tuple[Any, Any], x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
        # params and batch stats both enter the grad trace: BatchNorm writes its running stats, and
        # nnx refuses writes to a Variable from another trace level; the stats' gradient is unused.
        m = nnx.merge(graphdef, *variables)
        logits = m(x, train_timesteps)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, nnx.state(m, nnx.BatchStat)

    def step(carry: tuple, x: jax.Array, y: jax.Array) -> tuple[tuple, jax.Array]:
        params, stats, opt_state = carry
        (loss, stats), (grads, _) = jax.value_and_grad(loss_fn, has_aux=True)((params, stats), x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    box = {"c": (params, stats, tx.init(params))}

    def train_step() -> None:
        box["c"], loss = step(box["c"], x, y)
        jax.block_until_ready(loss)

    train = timing.measure({"case": train_step}, repeats, warmup)["case"]
    note = (f"jax {jax.__version__} ({jax.devices()[0].platform}), jit; stateless layers on [T*B], "
            f"IF layers scanned by spyx.nn.run (lax.scan), arctan; spyx.nn.IF subclassed to fire on the "
            f"same step's input (spyx.nn.IF fires one step late); input [B,28,28,1] fed every step")
    return {"library": "spyx", "version": _version("spyx"), "inference_s": inference, "train_step_s": train,
            "repeats": repeats, "note": note}


# ------------------------------------------------------------------------------------------------


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
    timesteps = tuple(int(T) for T in timesteps)
    if name == "spyx":
        return _spyx_bench(batch, timesteps, train_timesteps, repeats, warmup)
    return _torch_bench(name, batch, timesteps, train_timesteps, repeats, warmup)


def check_peer(name: str, batch: int = 2, timesteps: int = 2) -> dict:
    """What peer ``name``'s network computes: logits shape, learnable parameter count, spike values."""
    reason = _reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    spikes: list = []
    if name == "spyx":
        import jax
        import numpy as np
        from flax import nnx

        model = build_spyx()
        model.eval()
        graphdef, state = nnx.split(model)

        @jax.jit
        def run(state: Any, x: jax.Array) -> tuple[jax.Array, list]:
            record: list = []
            return nnx.merge(graphdef, state)(x, timesteps, record=record), record

        x = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
        out, spikes = run(state, x)
        out = np.asarray(out)
        n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
        spikes = [np.asarray(s) for s in spikes]
    else:
        import torch

        torch.manual_seed(0)
        net = build_spikingjelly() if name == "spikingjelly" else build_snntorch()
        net.eval()
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            if name == "spikingjelly":
                from spikingjelly.activation_based import neuron

                hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o))
                         for m in net.modules() if isinstance(m, neuron.IFNode)]
                out = _sj_forward(net, x, timesteps)
                for h in hooks:
                    h.remove()
            else:
                out = net(x, timesteps, record=spikes)
        n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        out = out.numpy()
        spikes = [s.numpy() for s in spikes]
    values = sorted({float(v) for s in spikes for v in set(s.ravel().tolist())})
    return {"output_shape": tuple(out.shape), "finite": bool(math.isfinite(float(abs(out).sum()))),
            "num_params": int(n_params), "expected_params": NUM_PARAMS, "spike_values": values,
            "spike_layers": len(spikes) if name != "snntorch" else len(spikes) // timesteps,
            "spike_rate": float(sum(s.sum() for s in spikes) / max(1, sum(s.size for s in spikes)))}


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


if __name__ == "__main__":
    main()
