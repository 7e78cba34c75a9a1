"""Independent NumPy re-simulation of a NIR graph, written from NIR's own node definitions (``nir.ir``).

It is used to check the exporter: it shares no code with ``noisesnn_jax`` and imports only ``numpy`` (the ``nir``
node objects are read by their type name and attributes). Conventions (the documented contract of the exporter):

- Discrete time, dt = 1. At every step t = 1..T each node is evaluated once, in topological order of the graph's edges;
  edges carry no delay (a node at step t sees its predecessors' step-t outputs). A node with several incoming edges
  receives the SUM of its inputs. A cycle, an unknown node type, or not exactly one Input and one Output: ValueError.
- Shapes exclude the batch axis; arrays are float32 and channels-first ([B, C, H, W], NIR's layout). The same images are
  presented at every step. Input passes them through; the value arriving at the Output node is the result per step.
- Affine: y = x @ W.T + b with W (out, in). Linear: y = x @ W.T. Scale: y = x * scale.
- Conv2d: cross-correlation (PyTorch convention), weight (C_out, C_in, kH, kW), bias (C_out,), stride (sH, sW),
  symmetric zero padding (pH, pW) (or 'valid' = 0, or 'same' for stride 1 and odd kernels); dilation 1, groups 1:
  out[o, i, j] = bias[o] + sum_{c,u,v} w[o, c, u, v] * xpad[c, i*sH + u, j*sW + v].
- SumPool2d / AvgPool2d: kernel_size, stride, symmetric zero padding; AvgPool divides by kH*kW (padding counted).
- Flatten: start_dim / end_dim index the non-batch axes (0, -1 flattens (C, H, W) to C*H*W in C order).
- IF:  v <- v + r * I.   LIF: v <- v + (dt / tau) * (v_leak - v + r * I)  (forward Euler of tau dv/dt = v_leak - v + R I).
  Then z = 1 where v > v_threshold (NIR) or v >= v_threshold if metadata "spike_condition" is ">="; reset v = v_reset
  where z = 1 (NIR; metadata "reset" absent or "zero") or v = v - z * v_threshold (metadata "reset" = "subtract").
  Before step 1, v = metadata "v_init" (broadcast to the node shape) if present, else 0. The node outputs z (0/1).
  Metadata values may be str, bytes (as after ``nir.read``), or numpy scalars / arrays.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=F32)


def _pair(a) -> tuple[int, int]:
    a = np.asarray(a).reshape(-1)
    if a.size == 1:
        return int(a[0]), int(a[0])
    if a.size != 2:
        raise ValueError(f"expected an int or a pair, got {a}")
    return int(a[0]), int(a[1])


def _meta_str(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf8")
    return str(value)


def _windows(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """[B, C, H, W] -> zero-padded sliding windows [B, C, Ho, Wo, kH, kW]."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _conv2d(node):
    w, b = _f32(node.weight), _f32(node.bias)
    if w.ndim != 4:
        raise ValueError(f"Conv2d weight must be (C_out, C_in, kH, kW), got {w.shape}")
    if np.any(np.asarray(node.dilation) != 1) or int(np.asarray(node.groups)) != 1:
        raise ValueError("Conv2d: only dilation 1 and groups 1 are supported")
    kernel, stride, padding = w.shape[2:], _pair(node.stride), node.padding
    if isinstance(padding, (str, bytes, np.str_, np.bytes_)):
        padding = _meta_str(padding)
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same" and stride == (1, 1) and kernel[0] % 2 == 1 and kernel[1] % 2 == 1:
            padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        else:
            raise ValueError(f"Conv2d: unsupported padding {padding!r} with stride {stride} and kernel {kernel}")
    padding = _pair(padding)

    def conv(x):
        win = _windows(x, kernel, stride, padding)  # [B, C, Ho, Wo, kH, kW]
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # [B, Ho, Wo, C_out]
        return (y.transpose(0, 3, 1, 2) + b[:, None, None]).astype(F32)

    return conv


def _pool(node, average: bool):
    kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    scale = F32(1.0 / (kernel[0] * kernel[1])) if average else F32(1.0)
    return lambda x: (_windows(x, kernel, stride, padding).sum(axis=(4, 5), dtype=F32) * scale).astype(F32)


def _flatten(node):
    def flatten(x):
        shape, nd = x.shape[1:], x.ndim - 1
        start, end = int(node.start_dim) % nd, int(node.end_dim) % nd
        return x.reshape(x.shape[0], *shape[:start], -1, *shape[end + 1 :])

    return flatten


def _neuron(node, name: str, leaky: bool, record: dict | None):
    meta = node.metadata or {}
    r, thr, v_reset = _f32(node.r), _f32(node.v_threshold), _f32(node.v_reset)
    if leaky:
        tau, v_leak = _f32(node.tau), _f32(node.v_leak)
    cond = _meta_str(meta.get("spike_condition", ">"))
    reset = _meta_str(meta.get("reset", "zero"))
    if cond not in (">", ">=") or reset not in ("zero", "subtract"):
        raise ValueError(f"{name}: unsupported spike_condition {cond!r} or reset {reset!r}")
    v_init = _f32(meta.get("v_init", 0.0))
    state = {}

    def step(current):
        v = state.get("v")
        if v is None:
            v = np.broadcast_to(v_init, current.shape).astype(F32)
        if leaky:
            v = v + (F32(1.0) / tau) * (v_leak - v + r * current)  # dt = 1
        else:
            v = v + r * current
        fired = v >= thr if cond == ">=" else v > thr
        z = fired.astype(F32)
        v = v - z * thr if reset == "subtract" else np.where(fired, v_reset, v)
        state["v"] = v.astype(F32)
        if record is not None:
            record.setdefault(name, []).append(z)
        return z

    return step


def _make_op(name: str, node, record: dict | None):
    kind = type(node).__name__
    if kind in ("Input", "Output"):
        return lambda x: x
    if kind == "Affine":
        w, b = _f32(node.weight), _f32(node.bias)
        return lambda x: (x @ w.T + b).astype(F32)
    if kind == "Linear":
        w = _f32(node.weight)
        return lambda x: (x @ w.T).astype(F32)
    if kind == "Scale":
        s = _f32(node.scale)
        return lambda x: (x * s).astype(F32)
    if kind == "Conv2d":
        return _conv2d(node)
    if kind in ("AvgPool2d", "SumPool2d"):
        return _pool(node, average=kind == "AvgPool2d")
    if kind == "Flatten":
        return _flatten(node)
    if kind in ("IF", "LIF"):
        return _neuron(node, name, leaky=kind == "LIF", record=record)
    raise ValueError(f"node {name!r}: unsupported NIR node type {kind}")


def _topological_order(graph) -> list[str]:
    names = list(graph.nodes)
    preds = {n: [] for n in names}
    for src, dst in graph.edges:
        if src not in preds or dst not in preds:
            raise ValueError(f"edge ({src!r}, {dst!r}) references an unknown node")
        preds[dst].append(src)
    order, done = [], set()
    while len(order) < len(names):
        ready = [n for n in names if n not in done and all(p in done for p in preds[n])]
        if not ready:
            raise ValueError(f"graph has a cycle among {sorted(set(names) - done)}")
        order.extend(ready)
        done.update(ready)
    return order


def simulate(graph, images: np.ndarray, timesteps: int, record: dict | None = None) -> np.ndarray:
    """Run ``graph`` for ``timesteps`` steps on ``images`` ([B, C, H, W] or [B, N]); returns the Output [T, B, ...].

    If ``record`` is a dict, every IF/LIF node's spikes are stored in it under the node name as [T, B, ...].
    """
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    inputs = [n for n, k in kinds.items() if k == "Input"]
    outputs = [n for n, k in kinds.items() if k == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"need exactly one Input and one Output node, got {inputs} and {outputs}")
    images = _f32(images)
    in_shape = graph.nodes[inputs[0]].input_type.get("input")
    if in_shape is not None and tuple(int(s) for s in np.asarray(in_shape)) != images.shape[1:]:
        raise ValueError(f"images {images.shape} do not match the Input shape {tuple(np.asarray(in_shape))}")
    order = _topological_order(graph)
    preds = {n: [src for src, dst in graph.edges if dst == n] for n in order}
    for n in order:
        if n != inputs[0] and not preds[n]:
            raise ValueError(f"node {n!r} has no incoming edge")
    spikes = {} if record is not None else None
    ops = {n: _make_op(n, graph.nodes[n], spikes) for n in order}
    result = []
    for _ in range(timesteps):
        values = {}
        for n in order:
            if n == inputs[0]:
                x = images
            else:
                x = values[preds[n][0]]
                for p in preds[n][1:]:
                    x = x + values[p]  # several incoming edges: their sum
            values[n] = ops[n](x)
        result.append(values[outputs[0]])
    if record is not None:
        record.update({name: np.stack(zs) for name, zs in spikes.items()})
    return np.stack(result).astype(F32)


def predict(graph, images: np.ndarray, timesteps: int) -> np.ndarray:
    """Class index per image [B]: argmax over classes of the Output averaged over the T steps."""
    out = simulate(graph, images, timesteps).mean(axis=0)
    return out.reshape(out.shape[0], -1).argmax(axis=-1)
