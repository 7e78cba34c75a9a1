"""NIR export and import: a spiking network as a graph of the Neuromorphic Intermediate
Representation (the ``nir`` package, the interchange format of the SNN libraries and the route to
neuromorphic chips), and a Flax model built from such a graph.

How this library's multi-step network maps onto NIR's nodes (the graph's metadata says the same)::

    time            discrete, dt = 1: each NIR integration step is one step of this library
                    (forward Euler of NIR's equations with dt = 1)
    IF              v <- v + r*I                     (this library: m = v + x; r = 1)
    LIF             v <- v + (v_leak - v + r*I)/tau  (this library: m = v + (x - v)/tau; r = 1, v_leak = 0)
    fire            z = 1[v >= v_threshold]          (NIR writes v > v_threshold; node metadata
                                                      spike_condition = ">=")
    reset           subtract: v <- v - z*v_threshold (node metadata reset = "subtract"; NIR's own
                    reset sets v to v_reset, which is this library's reset = "zero" with v_reset = 0)
    initial state   v_0 = noise mean * theta         (node metadata v_init, an array of the node's shape)
    spike           amplitude 1 in NIR; this library's layers emit theta*s, so theta is folded into
                    the next conv/affine layer's weights (a Scale node where no such layer follows)
    input           the image, channels first [C, H, W], presented unchanged at every step
                    (this library's constant first-layer current)
    output          the readout's current at every step; the prediction is the argmax of its mean over T
    layout          NIR is channels-first: Conv2d weights [C_out, C_in, kH, kW], Flatten over [C, H, W]
                    in C order (the readout's weights are permuted to match). A strided "SAME"
                    convolution pads unevenly, which NIR's symmetric padding cannot say: the kernel
                    gets a row/column of zero taps instead (the same function); import strips them.

Export traces the batch-norm-folded network once at T=1 (:func:`noisesnn_jax.tracing.trace`: the
modules ``nn.Conv``, ``nn.Dense``, :class:`~noisesnn_jax.layers.SpikingNeuron` and the functions of
:mod:`noisesnn_jax.layers`, ``pool2d``, ``flatten_features``, ``global_avg_pool``, ``add``,
``average_readout``, with the values flowing between them) and turns each node of the trace into
NIR nodes by its rule, so a user's own model exports when it is built from those. Anything else (max
pooling, a ReLU, an operation the trace does not see) is an :class:`~noisesnn_jax.errors.ExportError`
that names the layer. The exported graph is re-imported and checked against the model before it is
returned. Import (:func:`from_nir`, the
:class:`NIRNetwork` it builds) lives in :mod:`noisesnn_jax.interop.nir_import` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np

from noisesnn_jax import layers, tracing
from noisesnn_jax.contract import Array, SpikingModel, Variables
from noisesnn_jax.errors import ExportError
from noisesnn_jax.interop.nir_import import NEURON_NODES, SUPPORTED_NODES, GraphNode, NIRNetwork, _nir, from_nir

if TYPE_CHECKING:
    from nir import NIRGraph

__all__ = ["GraphNode", "NEURON_NODES", "NIRNetwork", "SUPPORTED_NODES", "from_nir", "to_nir", "write"]



# ----------------------------------------------------------------------------------------- export


@dataclasses.dataclass
class _Value:
    """A tensor of the traced network, as the NIR graph sees it."""

    sources: list[str]  # NIR nodes whose outputs sum to this value
    shape: tuple[int, ...]  # NIR shape, no batch: (C, H, W) or (N,)
    scale: np.ndarray | None = None  # a per-channel (3-D) or per-feature (1-D) factor not yet in the graph
    order: np.ndarray | None = None  # flattened values: NIR feature j is this library's feature order[j]


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    (pads,) = jax.lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")
    return int(pads[0]), int(pads[1])


class _Exporter:
    """Builds NIR nodes and edges from the trace of one inference call."""

    def __init__(self, example: np.ndarray):
        self.nir = _nir()
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.values: dict[int, _Value] = {}  # index of a trace node -> the value of its output
        self.example = example
        self.output: _Value | None = None
        if example.ndim == 4:
            shape = (example.shape[3], example.shape[1], example.shape[2])
        elif example.ndim == 2:
            shape = (example.shape[1],)
        else:
            raise ExportError(f"NIR export takes images [B, H, W, C] or features [B, N]; got an example of shape "
                              f"{example.shape}")
        self.input = _Value(["input"], shape)
        self.nodes["input"] = self.nir.Input(input_type={"input": np.array(shape)})
        self._flat_input: _Value | None = None

    def name(self, base: str) -> str:
        base = base or "node"
        name, i = base, 1
        while name in self.nodes:
            name, i = f"{base}_{i}", i + 1
        return name

    def add_node(self, base: str, node: Any, inputs: list[str]) -> str:
        name = self.name(base)
        self.nodes[name] = node
        self.edges += [(src, name) for src in inputs]
        return name

    def value_of(self, node: tracing.Node, i: int, where: str) -> _Value:
        """The value of ``node``'s ``i``-th input; the model's input (or its flattening) when it is one."""
        if node.sources[i] in self.values:
            return self.values[node.sources[i]]
        a = np.asarray(node.inputs[i])
        if a.shape == self.example.shape and np.array_equal(a, self.example):
            return self.input
        flat = self.example.reshape(len(self.example), -1)
        if self.example.ndim == 4 and a.shape == flat.shape and np.array_equal(a, flat):
            if self._flat_input is None:
                self._flat_input = self.flatten(self.input, "input_flatten")
            return self._flat_input
        raise ExportError(f"{where}: its input comes from an operation the NIR export does not see (only nn.Conv, "
                          f"nn.Dense, SpikingNeuron and layers.pool2d / flatten_features / global_avg_pool / add / "
                          f"average_readout are traced); build the model from those")

    def materialize(self, value: _Value, base: str) -> list[str]:
        """The value's sources with its pending scale applied (a Scale node when it is not 1)."""
        if value.scale is None or np.all(value.scale == 1.0):
            return list(value.sources)
        scale = value.scale.astype(np.float32)
        full = scale[:, None, None] * np.ones(value.shape, np.float32) if len(value.shape) == 3 else scale
        return [self.add_node(f"{base}_scale", self.nir.Scale(scale=full), value.sources)]

    # --- operations

    def conv(self, where: str, mod: nn.Conv, value: _Value, params: dict, out: Any) -> _Value:
        if len(value.shape) != 3 or value.order is not None:
            raise ExportError(f"{where}: a convolution of a flattened value has no NIR node")
        if (mod.feature_group_count != 1 or (mod.kernel_dilation not in (None, 1) and set(np.ravel(mod.kernel_dilation))
                                             != {1}) or (mod.input_dilation not in (None, 1)
                                                         and set(np.ravel(mod.input_dilation)) != {1})):
            raise ExportError(f"{where}: grouped or dilated convolutions are not exported; use feature_group_count=1 "
                              f"and no dilation")
        kernel = np.asarray(params["kernel"], np.float32)  # [kh, kw, C_in, C_out]
        if kernel.ndim != 4:
            raise ExportError(f"{where}: only 2-D convolutions are exported (kernel shape {kernel.shape})")
        kh, kw, cin, cout = kernel.shape
        strides = mod.strides if mod.strides is not None else 1
        strides = (strides, strides) if isinstance(strides, int) else tuple(int(s) for s in strides)
        _, h, w = value.shape
        if isinstance(mod.padding, str):
            if mod.padding.upper() == "SAME":
                pads = [_same_pads(h, kh, strides[0]), _same_pads(w, kw, strides[1])]
            elif mod.padding.upper() == "VALID":
                pads = [(0, 0), (0, 0)]
            else:
                raise ExportError(f"{where}: padding {mod.padding!r} has no NIR equivalent; use SAME, VALID or numbers")
        else:
            pads = [tuple(int(p) for p in pair) for pair in nn.linear.canonicalize_padding(mod.padding, 2)]
        if value.scale is not None:
            kernel = kernel * value.scale.astype(np.float32)[None, None, :, None]
        weight = kernel.transpose(3, 2, 0, 1)  # [C_out, C_in, kh, kw]
        sym = []
        for axis, (lo, hi) in zip((2, 3), pads):  # uneven padding: zero taps so that NIR's symmetric padding fits
            extra = abs(hi - lo)
            if extra:
                zeros = np.zeros(weight.shape[:axis] + (extra,) + weight.shape[axis + 1:], np.float32)
                weight = np.concatenate([zeros, weight] if hi > lo else [weight, zeros], axis=axis)
            sym.append(max(lo, hi))
        bias = np.asarray(params["bias"], np.float32) if "bias" in params else np.zeros(cout, np.float32)
        node = self.nir.Conv2d(input_shape=(h, w), weight=weight, stride=strides, padding=tuple(sym),
                               dilation=(1, 1), groups=1, bias=bias)
        name = self.add_node(where, node, value.sources)
        return _Value([name], (cout, int(out.shape[-3]), int(out.shape[-2])))

    def dense(self, where: str, value: _Value, params: dict) -> _Value:
        if len(value.shape) != 1:
            raise ExportError(f"{where}: a dense layer on a [H, W, C] tensor has no NIR node; flatten it first "
                              f"(layers.flatten_features)")
        kernel = np.asarray(params["kernel"], np.float32)  # [N_in, N_out]
        if value.order is not None:
            kernel = kernel[value.order]
        if value.scale is not None:
            kernel = kernel * value.scale.astype(np.float32)[:, None]
        weight = np.ascontiguousarray(kernel.T)
        node = (self.nir.Affine(weight=weight, bias=np.asarray(params["bias"], np.float32)) if "bias" in params
                else self.nir.Linear(weight=weight))
        name = self.add_node(where, node, value.sources)
        return _Value([name], (kernel.shape[1],))

    def neuron(self, where: str, mod: layers.SpikingNeuron, value: _Value, threshold: Any) -> _Value:
        channels = value.shape[0]
        theta = np.asarray(threshold, np.float32)  # as the layer used it
        if theta.ndim == 0:
            theta = np.full(value.shape[0] if len(value.shape) == 3 else value.shape[-1], theta, np.float32)
        if len(value.shape) == 3:
            if theta.shape != (channels,):
                raise ExportError(f"{where}: threshold of shape {theta.shape} for {channels} channels")
            full = lambda a: (a[:, None, None] * np.ones(value.shape, np.float32)).astype(np.float32)  # noqa: E731
            out_scale = theta
        else:
            if value.order is not None:
                theta = theta[value.order]
            full = lambda a: np.asarray(a, np.float32).copy()  # noqa: E731
            out_scale = theta
        v_threshold = full(theta)
        meta = {"reset": mod.neuron.reset, "spike_condition": ">=",
                "v_init": (np.float32(mod.noise.mean) * v_threshold).astype(np.float32),
                "time_step": "dt = 1 (forward Euler)"}
        zeros, ones = np.zeros(value.shape, np.float32), np.ones(value.shape, np.float32)
        if mod.neuron.tau is None:
            node = self.nir.IF(r=ones, v_threshold=v_threshold, v_reset=zeros, metadata=meta)
        else:
            node = self.nir.LIF(tau=np.full(value.shape, mod.neuron.tau, np.float32), r=ones, v_leak=zeros,
                                v_threshold=v_threshold, v_reset=zeros, metadata=meta)
        name = self.add_node(where, node, self.materialize(value, where))
        scale = None if np.all(out_scale == 1.0) else out_scale
        return _Value([name], value.shape, scale, value.order)

    def pool(self, where: str, value: _Value, kind: str, window: int, stride: int, padding: Any) -> _Value:
        if kind != "avg":
            raise ExportError(f"{where}: {kind} pooling has no NIR node (NIR pools by average or sum); "
                              f"build the model with average pooling (pool='avg')")
        if len(value.shape) != 3:
            raise ExportError(f"{where}: pooling needs a [C, H, W] value, got {value.shape}")
        c, h, w = value.shape
        if padding == "VALID":
            pads = [(0, 0), (0, 0)]
        elif padding == "SAME":
            pads = [_same_pads(h, window, stride), _same_pads(w, window, stride)]
        else:
            raise ExportError(f"{where}: pooling padding {padding!r} is not exported; use VALID or SAME")
        if any(lo != hi for lo, hi in pads):
            raise ExportError(f"{where}: average pooling padded unevenly (SAME) has no NIR equivalent; use VALID")
        node = self.nir.AvgPool2d(kernel_size=np.array([window, window]), stride=np.array([stride, stride]),
                                  padding=np.array([pads[0][0], pads[1][0]]))
        name = self.add_node(where, node, value.sources)
        out = ((h + 2 * pads[0][0] - window) // stride + 1, (w + 2 * pads[1][0] - window) // stride + 1)
        return _Value([name], (c, *out), value.scale, None)

    def global_pool(self, where: str, value: _Value) -> _Value:
        if len(value.shape) != 3:
            raise ExportError(f"{where}: global average pooling needs a [C, H, W] value, got {value.shape}")
        c, h, w = value.shape
        node = self.nir.AvgPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0]))
        pooled = _Value([self.add_node(where, node, value.sources)], (c, 1, 1), value.scale)
        return self.flatten(pooled, f"{where}_flatten")

    def flatten(self, value: _Value, where: str) -> _Value:
        if len(value.shape) == 1:
            return value
        c, h, w = value.shape
        node = self.nir.Flatten(input_type={"input": np.array(value.shape)}, start_dim=0, end_dim=-1)
        name = self.add_node(where, node, value.sources)
        order = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).ravel()  # NIR's C-order -> HWC's
        scale = None if value.scale is None else np.repeat(value.scale, h * w)
        return _Value([name], (c * h * w,), scale, order)

    def add(self, where: str, values: list[_Value]) -> _Value:
        shapes = {v.shape for v in values}
        if len(shapes) != 1:
            raise ExportError(f"{where}: adds values of shapes {sorted(shapes)}")
        orders = [v.order for v in values]
        if any((o is None) != (orders[0] is None) or (o is not None and not np.array_equal(o, orders[0]))
               for o in orders):
            raise ExportError(f"{where}: adds values flattened in different orders")
        scales = [v.scale for v in values]
        same = all((s is None and scales[0] is None) or (s is not None and scales[0] is not None
                                                          and np.array_equal(s, scales[0])) for s in scales)
        sources = ([s for v in values for s in v.sources] if same
                   else [s for v in values for s in self.materialize(v, where)])
        if len(set(sources)) != len(sources):
            raise ExportError(f"{where}: adds a value to itself, which NIR's summed edges cannot say; scale it instead")
        return _Value(sources, values[0].shape, scales[0] if same else None, orders[0])

    def finish(self, value: _Value) -> None:
        sources = self.materialize(value, "output")
        self.nodes["output"] = self.nir.Output(output_type={"output": np.array(value.shape)})
        self.edges += [(s, "output") for s in sources]


def _path_name(node: tracing.Node) -> str:
    path = list(node.path)
    if node.op == "spiking" and len(path) > 1 and path[-1] == "neuron":
        path = path[:-1]  # the Activation that holds it: act0, not act0.neuron
    return ".".join(path) or type(node.module).__name__.lower()


def _check_module(ex: _Exporter, node: tracing.Node, where: str) -> None:
    """A module without a rule of its own: a container (its parts report themselves), or an error."""
    mod = node.module
    if isinstance(mod, layers.Activation):
        if mod.kind != "spike":
            raise ExportError(f"{where}: a {mod.kind} activation is not a spiking neuron; only spiking networks "
                              f"export to NIR (convert an ANN first: baselines.ann_to_snn)")
    elif node.op == "batch_norm" or isinstance(mod, layers.QCFS) or type(mod).__module__.startswith("flax."):
        raise ExportError(f"{where}: {type(mod).__name__} has no NIR node (exported: nn.Conv, nn.Dense, "
                          f"SpikingNeuron, and batch norm once folded)")


def _readout(ex: _Exporter, node: tracing.Node, where: str) -> None:
    ex.output = ex.value_of(node, 0, "the readout")


# The NIR rule of each kind of trace node (tracing.OPS): the value of its output, or None (no value).
_RULES: dict[str, Callable[[_Exporter, tracing.Node, str], _Value | None]] = {
    "conv": lambda ex, n, where: ex.conv(where, n.module, ex.value_of(n, 0, where), n.params, n.output),
    "dense": lambda ex, n, where: ex.dense(where, ex.value_of(n, 0, where), n.params),
    "spiking": lambda ex, n, where: ex.neuron(where, n.module, ex.value_of(n, 0, where), n.attrs["threshold"]),
    "pool": lambda ex, n, where: ex.pool(where, ex.value_of(n, 0, where), **n.attrs),
    "flatten": lambda ex, n, where: ex.flatten(ex.value_of(n, 0, where), where),
    "global_avg_pool": lambda ex, n, where: ex.global_pool(where, ex.value_of(n, 0, where)),
    "add": lambda ex, n, where: ex.add(where, [ex.value_of(n, i, where) for i in range(len(n.inputs))]),
    "readout": _readout,
    "batch_norm": _check_module,
    "module": _check_module,
}


def _export(model: Any, variables: Variables, example: np.ndarray) -> _Exporter:
    """Trace ``model`` once (:func:`noisesnn_jax.tracing.trace`) and build the NIR nodes from the trace, each
    node by its rule."""
    ex = _Exporter(example)
    graph = tracing.trace(model, variables, example)
    counts: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        if node.module is None:  # a function of layers: named by its kind and count
            where = f"{node.op}{counts.setdefault(node.op, 0)}"
            counts[node.op] += 1
        else:
            where = _path_name(node)
        value = _RULES[node.op](ex, node, where)
        if value is not None:
            ex.values[i] = value
    if ex.output is None:
        raise ExportError(f"{type(model).__name__} does not end with layers.average_readout, so the export cannot "
                          f"tell its output")
    ex.finish(ex.output)
    return ex


def to_nir(model: SpikingModel, variables: Variables, example: Array | np.ndarray, *, timesteps: int | None = None,
           verify: bool = True) -> NIRGraph:
    """The spiking network as a ``nir.NIRGraph`` (batch norm folded first).

    Args:
      model: a spiking model that follows the model contract.
      variables: its variables.
      example: a few inputs ``[B, ...]`` (images ``[B, H, W, C]`` or features ``[B, N]``) to
        trace the network on (and to check the export with).
      timesteps: the ``T`` the network is meant to run for, recorded in the graph's metadata;
        ``None`` records none.
      verify: import the graph back (:func:`from_nir`) and check that it gives the model's
        logits at ``T = 4`` on ``example``.

    Returns:
      The graph.

    Raises:
      ExportError: the ``nir`` package is missing, an example of another rank, batch norm that
        cannot be folded, a layer that has no NIR node (named), or a graph that does not
        reproduce the model.
    """
    from noisesnn_jax import __version__
    from noisesnn_jax.convert import fold_batchnorm

    example = np.asarray(example, np.float32)
    variables = {k: c for k, c in variables.items() if k not in (layers.READOUT_COLLECTION, "intermediates")}
    try:
        model, variables = fold_batchnorm(model, variables, example)
    except ValueError as e:
        raise ExportError(f"batch norm cannot be folded for export: {e}") from None
    ex = _export(model, variables, example)
    nir = ex.nir
    meta = {
        "generator": f"noisesnn-jax {__version__}",
        "time_step": "discrete, dt = 1: one NIR integration step (forward Euler) is one time step",
        "input": "channels first [C, H, W], the same input at every time step",
        "readout": "the output at every time step; the prediction is the argmax of its mean over the steps",
        "neurons": "fire on v >= v_threshold, reset by subtracting v_threshold (node metadata reset), start at "
                   "node metadata v_init; spikes of amplitude 1",
    }
    if timesteps is not None:
        meta["timesteps"] = int(timesteps)
    graph = nir.NIRGraph(nodes=ex.nodes, edges=ex.edges, metadata=meta, type_check=False)
    if verify:
        _verify(model, variables, example, graph)
    return graph


def _verify(model: Any, variables: Variables, example: np.ndarray, graph: Any, timesteps: int = 4) -> None:
    """Raise unless the graph, imported back, gives the model's output at ``timesteps`` on ``example``."""
    from noisesnn_jax.evaluate import predict
    rows = example[: min(len(example), 8)]
    want = np.asarray(predict(model, variables, rows, timesteps)[0])
    net, net_vars = from_nir(graph)
    got = np.asarray(predict(net, net_vars, rows, timesteps)[0])
    err = float(np.max(np.abs(got - want)))
    if not err <= 1e-4 * max(1.0, float(np.max(np.abs(want)))):
        raise ExportError(f"the exported graph does not reproduce {type(model).__name__} (its logits at T={timesteps} "
                          f"differ by {err:.3g}): the model computes something the NIR trace does not see")


def write(graph: NIRGraph, path: str) -> int:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``) atomically: a failed write leaves no file.

    Args:
      graph: the graph (:func:`to_nir`).
      path: the file to write.

    Returns:
      The file's size in bytes.

    Raises:
      ExportError: the ``nir`` package is missing.
    """
    from noisesnn_jax.interop.export import write_atomic
    nir = _nir()
    return write_atomic(path, lambda tmp: nir.write(tmp, graph))
