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

Export traces the batch-norm-folded network once at T=1 and records the modules (``nn.Conv``,
``nn.Dense``, :class:`~noisesnn_jax.layers.SpikingNeuron`) and the functions of
:mod:`noisesnn_jax.layers` (``pool2d``, ``flatten_features``, ``global_avg_pool``, ``add``,
``average_readout``) with the values flowing between them, so a user's own model exports when it is
built from those. Anything else (max pooling, a ReLU, an operation the trace does not see) is an
:class:`~noisesnn_jax.errors.ExportError` that names the layer. The exported graph is re-imported
and checked against the model before it is returned.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import layers
from noisesnn_jax.errors import ExportError
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise

Array = jax.Array
Variables = dict[str, Any]
NEURON_NODES = ("IF", "LIF")
SUPPORTED_NODES = ("Input", "Output", "Conv2d", "Affine", "Linear", "Scale", "AvgPool2d", "SumPool2d", "Flatten",
                   *NEURON_NODES)


def _nir():
    try:
        import nir
    except ImportError:
        raise ExportError("NIR needs the nir package: pip install 'noisesnn-jax[export]'") from None
    return nir


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
        self.values: dict[int, tuple[Any, _Value]] = {}  # id of a traced array -> (array, value)
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

    def bind(self, array: Any, value: _Value) -> None:
        self.values[id(array)] = (array, value)

    def value_of(self, array: Any, where: str) -> _Value:
        """The value of a traced array; the model's input (or its flattening) when it is one."""
        seen = self.values.get(id(array))
        if seen is not None and seen[0] is array:
            return seen[1]
        a = np.asarray(array)
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

    def neuron(self, where: str, mod: layers.SpikingNeuron, value: _Value, params: dict) -> _Value:
        channels = value.shape[0]
        if mod.learn_threshold:
            theta = np.maximum(np.asarray(params["threshold"], np.float32), 1e-3)  # as the layer computes it
        else:
            theta = np.full(value.shape[0] if len(value.shape) == 3 else value.shape[-1], mod.neuron.threshold,
                            np.float32)
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


def _path_name(mod: nn.Module) -> str:
    path = list(mod.scope.path) if mod.scope is not None else []
    if isinstance(mod, layers.SpikingNeuron) and len(path) > 1 and path[-1] == "neuron":
        path = path[:-1]  # the Activation that holds it: act0, not act0.neuron
    return ".".join(path) or type(mod).__name__.lower()


def _trace(model: Any, variables: Variables, example: np.ndarray) -> _Exporter:
    """Run ``model`` once at T=1 (inference, noise at its mean), recording its modules and the layer
    functions in the order they run, and build the NIR nodes from that record."""
    ex = _Exporter(example)
    events: list[tuple] = []  # (op, inputs, output, attrs) from layers; ("module", mod, args, out, params)

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            mod = context.module
            events.append(("module", mod, args, out, mod.variables.get("params", {})))
        return out

    with layers.graph_trace(events), nn.intercept_methods(interceptor):
        model.apply(variables, jnp.asarray(example), train=False, timesteps=1, sample_noise=False)
    counts: dict[str, int] = {}
    for event in events:
        if event[0] != "module":
            op, inputs, out, attrs = event
            where = f"{op}{counts.setdefault(op, 0)}"
            counts[op] += 1
            if op == "readout":
                ex.output = ex.value_of(inputs[0], "the readout")
                continue
            vals = [ex.value_of(a, where) for a in inputs]
            if op == "pool":
                value = ex.pool(where, vals[0], **attrs)
            elif op == "flatten":
                value = ex.flatten(vals[0], where)
            elif op == "global_avg_pool":
                value = ex.global_pool(where, vals[0])
            elif op == "add":
                value = ex.add(where, vals)
            else:  # pragma: no cover - a new layers function without an export rule
                raise ExportError(f"{where}: no NIR rule for layers.{op}")
            ex.bind(out, value)
            continue
        _, mod, args, out, params = event
        where = _path_name(mod)
        if isinstance(mod, layers.Activation):
            if mod.kind != "spike":
                raise ExportError(f"{where}: a {mod.kind} activation is not a spiking neuron; only spiking networks "
                                  f"export to NIR (convert an ANN first: baselines.ann_to_snn)")
        elif isinstance(mod, nn.Conv):
            ex.bind(out, ex.conv(where, mod, ex.value_of(args[0], where), params, out))
        elif isinstance(mod, nn.Dense):
            ex.bind(out, ex.dense(where, ex.value_of(args[0], where), params))
        elif isinstance(mod, layers.SpikingNeuron):
            ex.bind(out, ex.neuron(where, mod, ex.value_of(args[0], where), params))
        elif isinstance(mod, layers.QCFS) or type(mod).__module__.startswith("flax."):
            raise ExportError(f"{where}: {type(mod).__name__} has no NIR node (exported: nn.Conv, nn.Dense, "
                              f"SpikingNeuron, and batch norm once folded)")
        # any other module is a container: its parts report themselves
    if ex.output is None:
        raise ExportError(f"{type(model).__name__} does not end with layers.average_readout, so the export cannot "
                          f"tell its output")
    ex.finish(ex.output)
    return ex


def to_nir(model: Any, variables: Variables, example: Any, *, timesteps: int | None = None,
           verify: bool = True) -> Any:
    """The spiking network as a ``nir.NIRGraph`` (batch norm folded first).

    Args:
      model, variables: a spiking model that follows the model contract, and its variables.
      example: a few inputs ``[B, ...]`` to trace the network on (and to check the export with).
      timesteps: the ``T`` the network is meant to run for, recorded in the graph's metadata.
      verify: import the graph back (:func:`from_nir`) and check that it gives the model's
        logits at ``T = 4`` on ``example``.

    Raises:
      ExportError: a layer that has no NIR node (named), or a graph that does not reproduce the model.
    """
    from noisesnn_jax import __version__
    from noisesnn_jax.convert import fold_batchnorm

    example = np.asarray(example, np.float32)
    variables = {k: c for k, c in variables.items() if k not in (layers.READOUT_COLLECTION, "intermediates")}
    try:
        model, variables = fold_batchnorm(model, variables, example)
    except ValueError as e:
        raise ExportError(f"batch norm cannot be folded for export: {e}") from None
    ex = _trace(model, variables, example)
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


def write(graph: Any, path: str) -> int:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``) atomically: a failed write leaves no file.
    Returns its size in bytes."""
    from noisesnn_jax.export import write_atomic
    nir = _nir()
    return write_atomic(path, lambda tmp: nir.write(tmp, graph))


# ----------------------------------------------------------------------------------------- import


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One node of an imported graph: its kind, Flax name, inputs and static attributes."""

    name: str  # the NIR node's name
    kind: str  # NIR class name
    module: str  # Flax module name of its parameters
    inputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        return dict(self.attrs).get(key, default)


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.ndim == 0:
        return _text(value[()])
    return value


def _per_channel(arr: Any, shape: tuple[int, ...], where: str, what: str) -> np.ndarray:
    """A node parameter of NIR shape ``shape`` as one value per channel of this library's layout
    (the channel axis of ``[C, H, W]``, or every feature of ``[N]``)."""
    a = np.broadcast_to(np.asarray(arr, np.float32), shape)
    if len(shape) == 3:
        per = a[:, :1, :1]
        if not np.array_equal(np.broadcast_to(per, shape), a):
            raise ExportError(f"node {where!r}: {what} varies within a channel; only per-channel values are imported")
        return per[:, 0, 0].copy()
    if len(shape) == 1:
        return a.copy()
    raise ExportError(f"node {where!r}: {what} of shape {shape}; neurons on [C, H, W] or [N] are imported")


def _toposort(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in names}
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    ready = [n for n in names if indeg[n] == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(out) != len(names):
        raise ExportError("the NIR graph has a cycle (recurrent edges are not imported)")
    return out


def _read_graph(graph: Any) -> Any:
    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        if not os.path.exists(graph):
            raise ExportError(f"NIR file {str(graph)!r} does not exist")
        try:
            graph = nir.read(graph)
        except Exception as e:
            raise ExportError(f"{str(graph)!r} is not a readable NIR file ({type(e).__name__}: {e}); write it with "
                              f"nir.write") from None
    if not isinstance(graph, nir.NIRGraph):
        raise ExportError(f"expected a nir.NIRGraph or a path to a NIR file, got {type(graph).__name__}")
    return graph


def from_nir(graph: Any) -> tuple[NIRNetwork, Variables]:
    """A Flax model and its variables from a NIR graph (a ``nir.NIRGraph`` or a path to one).

    The model follows the model contract (:class:`noisesnn_jax.contract.SpikingModel`): it takes
    channels-last images ``[B, H, W, C]`` (or features ``[B, N]``), runs at ``timesteps=T`` as the
    graph does for ``T`` steps under the mapping of this module's docstring, and returns the output
    averaged over time ``[B, K]``; so it can be evaluated, counted and benchmarked like the zoo's
    models. Neuron metadata written by this library (``reset``, ``spike_condition``, ``v_init``)
    is honoured; without it a neuron follows NIR's definition (fire on ``v > v_threshold``, reset to
    ``v_reset = 0``, start at 0).

    Raises:
      ExportError: a file that does not parse, an unsupported node (named), shapes that do not
        chain, or neuron parameters outside the mapping.
    """
    graph = _read_graph(graph)
    nodes: dict[str, Any] = dict(graph.nodes)
    edges = [(str(a), str(b)) for a, b in graph.edges]
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise ExportError(f"the NIR graph has an edge {a!r} -> {b!r} to a node that does not exist")
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED_NODES:
            raise ExportError(f"node {name!r} is a {kind}, which is not imported (supported: {', '.join(SUPPORTED_NODES)})")
    inputs = [n for n, node in nodes.items() if type(node).__name__ == "Input"]
    outputs = [n for n, node in nodes.items() if type(node).__name__ == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; one of each is imported")
    order = _toposort(list(nodes), edges)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)

    params: dict[str, Any] = {}
    spec: list[GraphNode] = []
    shapes: dict[str, tuple[int, ...]] = {}
    used: set[str] = set()

    def module_name(name: str) -> str:
        base = re.sub(r"\W", "_", name) or "node"
        base = base if base[0].isalpha() else f"n_{base}"
        m, i = base, 1
        while m in used:
            m, i = f"{base}_{i}", i + 1
        used.add(m)
        return m

    for name in order:
        node = nodes[name]
        kind = type(node).__name__
        ins = preds[name]
        if kind == "Input":
            shape = tuple(int(s) for s in np.ravel(node.input_type["input"]))
            if ins:
                raise ExportError(f"Input node {name!r} has incoming edges")
        else:
            if not ins:
                raise ExportError(f"node {name!r} ({kind}) has no input edge")
            in_shapes = {shapes[p] for p in ins}
            if len(in_shapes) != 1:
                raise ExportError(f"node {name!r} ({kind}) sums inputs of different shapes {sorted(in_shapes)}: the "
                                  f"shapes do not chain")
            (shape_in,) = in_shapes
            shape, attrs, p = _import_node(name, kind, node, shape_in)
        mod = module_name(name)
        if kind == "Input":
            attrs, p = (("shape", shape),), None
        if kind in NEURON_NODES and p:  # the neuron layer's own threshold; r scales its input current
            if "r" in p:
                params[f"{mod}_r"] = p.pop("r")
                used.add(f"{mod}_r")
            if p:
                params[mod] = p
        elif p is not None:
            params[mod] = p
        spec.append(GraphNode(name, kind, mod, tuple(ins), attrs))
        shapes[name] = shape
    out_shape = shapes[outputs[0]]
    if len(out_shape) != 1:
        raise ExportError(f"the graph's output has shape {out_shape}; a classifier's output is [K]")
    return NIRNetwork(tuple(spec)), {"params": params}


def _import_node(name: str, kind: str, node: Any, shape_in: tuple[int, ...]):
    """``(output shape, static attributes, parameters)`` of one node given its input's shape."""
    def need(ndim: int) -> None:
        if len(shape_in) != ndim:
            raise ExportError(f"node {name!r} ({kind}) receives shape {shape_in}, expected {ndim}-D: the shapes do not "
                              f"chain")

    if kind == "Output":
        declared = node.output_type.get("output")
        if declared is not None and np.size(declared) and tuple(int(s) for s in np.ravel(declared)) != shape_in:
            raise ExportError(f"Output node {name!r} declares shape {tuple(np.ravel(declared))} but receives {shape_in}")
        return shape_in, (), None
    if kind == "Conv2d":
        need(3)
        weight = np.asarray(node.weight, np.float32)
        if weight.ndim != 4 or weight.shape[1] != shape_in[0]:
            raise ExportError(f"node {name!r}: Conv2d weight {weight.shape} does not take {shape_in[0]} input channels")
        if int(node.groups) != 1 or tuple(np.ravel(node.dilation)) not in ((1, 1), (1,)):
            raise ExportError(f"node {name!r}: grouped or dilated Conv2d is not imported")
        stride = tuple(int(s) for s in np.broadcast_to(np.ravel(node.stride), (2,)))
        pad = node.padding
        kh, kw = weight.shape[2:]
        if isinstance(pad, str) or (isinstance(pad, np.ndarray) and pad.dtype.kind in "SUO"):
            pad = _text(pad)
            if pad == "valid":
                pads = [[0, 0], [0, 0]]
            elif pad == "same" and stride == (1, 1) and kh % 2 and kw % 2:
                pads = [[kh // 2, kh // 2], [kw // 2, kw // 2]]
            else:
                raise ExportError(f"node {name!r}: Conv2d padding {pad!r} with stride {stride} is not imported")
        else:
            p = [int(v) for v in np.broadcast_to(np.ravel(pad), (2,))]
            pads = [[p[0], p[0]], [p[1], p[1]]]
        for axis, pr in zip((2, 3), pads):  # zero taps at a border: the export's way of padding unevenly
            while weight.shape[axis] > 1 and pr[0] > 0 and not np.any(np.take(weight, 0, axis=axis)):
                weight, pr[0] = np.delete(weight, 0, axis=axis), pr[0] - 1
            while weight.shape[axis] > 1 and pr[1] > 0 and not np.any(np.take(weight, -1, axis=axis)):
                weight, pr[1] = np.delete(weight, -1, axis=axis), pr[1] - 1
        kh, kw = weight.shape[2:]
        h = (shape_in[1] + sum(pads[0]) - kh) // stride[0] + 1
        w = (shape_in[2] + sum(pads[1]) - kw) // stride[1] + 1
        if h < 1 or w < 1:
            raise ExportError(f"node {name!r}: Conv2d on {shape_in} gives no output")
        bias = np.broadcast_to(np.asarray(node.bias, np.float32), (weight.shape[0],))
        attrs = (("features", weight.shape[0]), ("kernel", (kh, kw)), ("stride", stride),
                 ("padding", tuple(tuple(p) for p in pads)))
        return (weight.shape[0], h, w), attrs, {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)),
                                                "bias": jnp.asarray(bias)}
    if kind in ("Affine", "Linear"):
        weight = np.asarray(node.weight, np.float32)
        if weight.ndim != 2 or len(shape_in) != 1 or weight.shape[1] != shape_in[0]:
            raise ExportError(f"node {name!r}: {kind} weight {weight.shape} does not take an input of shape {shape_in}: "
                              f"the shapes do not chain (flatten before it)")
        p = {"kernel": jnp.asarray(weight.T)}
        if kind == "Affine":
            p["bias"] = jnp.asarray(np.broadcast_to(np.asarray(node.bias, np.float32), (weight.shape[0],)))
        return (weight.shape[0],), (("features", weight.shape[0]), ("bias", kind == "Affine")), p
    if kind == "Scale":
        scale = _layout(np.broadcast_to(np.asarray(node.scale, np.float32), shape_in))
        return shape_in, (("shape", scale.shape),), jnp.asarray(scale)
    if kind in ("AvgPool2d", "SumPool2d"):
        need(3)
        k = tuple(int(v) for v in np.broadcast_to(np.ravel(node.kernel_size), (2,)))
        s = tuple(int(v) for v in np.broadcast_to(np.ravel(node.stride), (2,)))
        p = tuple(int(v) for v in np.broadcast_to(np.ravel(node.padding), (2,)))
        h, w = (shape_in[1] + 2 * p[0] - k[0]) // s[0] + 1, (shape_in[2] + 2 * p[1] - k[1]) // s[1] + 1
        if h < 1 or w < 1:
            raise ExportError(f"node {name!r}: {kind} {k} on {shape_in} gives no output")
        return (shape_in[0], h, w), (("window", k), ("stride", s), ("padding", p)), None
    if kind == "Flatten":
        start, end = int(node.start_dim), int(node.end_dim)
        end = end if end >= 0 else len(shape_in) + end
        if start != 0 or end != len(shape_in) - 1:
            raise ExportError(f"node {name!r}: Flatten(start_dim={node.start_dim}, end_dim={node.end_dim}) of {shape_in} "
                              f"keeps some axes; only flattening every axis is imported")
        return (int(np.prod(shape_in)),), (), None
    # IF / LIF
    meta = {k: _text(v) for k, v in (node.metadata or {}).items()}
    theta = _per_channel(node.v_threshold, shape_in, name, "v_threshold")
    r = _per_channel(node.r, shape_in, name, "r")
    v_reset = np.asarray(node.v_reset if node.v_reset is not None else 0.0, np.float32)
    reset = meta.get("reset", "zero")
    if reset not in ("subtract", "zero"):
        raise ExportError(f"node {name!r}: reset {reset!r} is not imported (subtract or zero)")
    if reset == "zero" and np.any(v_reset != 0):
        raise ExportError(f"node {name!r}: v_reset other than 0 is not imported")
    if np.any(theta <= 0):
        raise ExportError(f"node {name!r}: v_threshold must be > 0")
    strict = meta.get("spike_condition", ">") != ">="
    if strict:  # fire on v > theta is fire on v >= the next float above theta
        theta = np.nextafter(theta, np.float32(np.inf)).astype(np.float32)
    v_init = meta.get("v_init", 0.0)
    v0 = _per_channel(v_init, shape_in, name, "v_init")
    mean = v0 / theta
    if not np.allclose(mean, mean.flat[0], rtol=1e-6, atol=1e-7):
        raise ExportError(f"node {name!r}: v_init / v_threshold varies; one initial fraction per layer is imported")
    tau = None
    if kind == "LIF":
        taus = _per_channel(node.tau, shape_in, name, "tau")
        if np.any(np.asarray(node.v_leak) != 0):
            raise ExportError(f"node {name!r}: LIF with v_leak other than 0 is not imported")
        if not np.all(taus == taus.flat[0]) or taus.flat[0] < 1:
            raise ExportError(f"node {name!r}: LIF tau must be one value >= 1 (time steps of dt = 1)")
        tau = float(taus.flat[0])
    uniform = bool(np.all(theta == theta.flat[0]))
    attrs = (("tau", tau), ("reset", reset), ("mean", float(mean.flat[0])),
             ("threshold", float(theta.flat[0]) if uniform else None), ("unit", bool(np.all(theta == 1.0))))
    p = {}
    if not uniform:
        p["threshold"] = jnp.asarray(theta)
    if not np.all(r == 1.0):
        attrs += (("r", len(r)),)
        p["r"] = jnp.asarray(r)
    return shape_in, attrs, p or None


def _layout(a: np.ndarray) -> np.ndarray:
    """A NIR-shaped array ``[C, H, W]`` in this library's channels-last layout ``[H, W, C]``."""
    return a.transpose(1, 2, 0) if a.ndim == 3 else a


def _pool(x: Array, op: str, window: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Array:
    lead = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:])
    pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    y = nn.avg_pool(flat, window, strides=stride, padding=pads, count_include_pad=True)
    if op == "SumPool2d":
        y = y * (window[0] * window[1])
    return y.reshape(lead + y.shape[1:])


class NIRNetwork(nn.Module):
    """A network imported from a NIR graph (:func:`from_nir`); follows the model contract."""

    graph: tuple[GraphNode, ...]

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None) -> Array:
        """Output ``[B, K]`` averaged over ``timesteps`` steps (images channels-last)."""
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise ValueError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
        T = timesteps
        values: dict[str, tuple[Array, bool]] = {}  # name -> (array, has a leading time axis)
        out = None
        for node in self.graph:
            if node.kind == "Input":
                shape = node.attr("shape")
                want = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
                x = jnp.asarray(x, jnp.float32)
                if len(shape) == 1:
                    x = x.reshape((x.shape[0], -1))
                if tuple(x.shape[1:]) != tuple(want):
                    raise ValueError(f"NIRNetwork expects inputs [B, {', '.join(map(str, want))}] (channels last); "
                                     f"got shape {tuple(x.shape)}")
                values[node.name] = (x, False)
                continue
            ins = [values[n] for n in node.inputs]
            timed = T > 1 and any(t for _, t in ins)
            if timed:
                ins = [(a if t else jnp.broadcast_to(a, (T,) + a.shape), True) for a, t in ins]
            h = ins[0][0]
            for a, _ in ins[1:]:
                h = h + a
            values[node.name] = (self._apply(node, h, timed, T, train, sample_noise), timed or
                                 (T > 1 and node.kind in NEURON_NODES))
            if node.kind == "Output":
                out = values[node.name]
        y, timed = out
        if T > 1 and not timed:
            y = jnp.broadcast_to(y, (T,) + y.shape)
        return layers.average_readout(self, y, T if T > 1 else 1)

    def _apply(self, node: GraphNode, h: Array, timed: bool, T: int, train: bool, sample_noise: bool | None) -> Array:
        kind = node.kind
        if kind == "Conv2d":
            return nn.Conv(node.attr("features"), node.attr("kernel"), strides=node.attr("stride"),
                           padding=node.attr("padding"), name=node.module)(h)
        if kind in ("Affine", "Linear"):
            return nn.Dense(node.attr("features"), use_bias=node.attr("bias"), name=node.module)(h)
        if kind == "Scale":
            return h * self.param(node.module, nn.initializers.ones, node.attr("shape"), jnp.float32)
        if kind in ("AvgPool2d", "SumPool2d"):
            return _pool(h, kind, node.attr("window"), node.attr("stride"), node.attr("padding"))
        if kind == "Flatten":
            lead = 2 if timed else 1
            if h.ndim - lead == 3:
                h = jnp.moveaxis(h, -1, lead)  # [..., H, W, C] -> [..., C, H, W]: NIR's flattening order
            return h.reshape(h.shape[:lead] + (-1,))
        if kind in NEURON_NODES:
            if node.attr("r"):
                h = h * self.param(f"{node.module}_r", nn.initializers.ones, (node.attr("r"),), jnp.float32)
            theta = node.attr("threshold")
            neuron = Neuron(threshold=theta if theta is not None else 1.0, tau=node.attr("tau"),
                            reset=node.attr("reset"))
            layer = layers.SpikingNeuron(neuron, Noise(kind="none", mean=node.attr("mean")),
                                         learn_threshold=theta is None, name=node.module)
            s = layer(h, timesteps=T, constant=T > 1 and not timed, train=train, sample_noise=sample_noise)
            if node.attr("unit"):
                return s
            if theta is None:
                theta = jnp.maximum(layer.variables["params"]["threshold"], 1e-3)  # as the layer uses it
            return s / theta  # amplitude 1, as NIR's spikes
        return h  # Output
