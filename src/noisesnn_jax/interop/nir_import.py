"""NIR import: a Flax model that follows the model contract, built from a NIR graph
(:func:`~noisesnn_jax.interop.nir_import.from_nir`; the mapping of NIR's semantics onto this
library's is in :mod:`noisesnn_jax.interop.nir`).

Each node kind imported has one entry in :data:`NODE_KINDS`: how a node of that kind is read
(checked, its shape, attributes and parameters) and how the imported network runs it."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import layers
from noisesnn_jax.contract import Array, Variables
from noisesnn_jax.errors import ExportError
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise

if TYPE_CHECKING:
    from nir import NIRGraph


def _nir():
    try:
        import nir
    except ImportError:
        raise ExportError("NIR needs the nir package: pip install 'noisesnn-jax[export]'") from None
    return nir


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One node of an imported graph: its kind, Flax name, inputs and static attributes.

    Attributes:
      name: the NIR node's name.
      kind: its NIR class name (one of :data:`SUPPORTED_NODES`).
      module: the Flax module (or param) name of its parameters.
      inputs: the names of the nodes whose outputs it sums.
      attrs: ``(key, value)`` pairs of static attributes (shapes, strides, neuron settings; values
        of any hashable type).
    """

    name: str  # the NIR node's name
    kind: str  # NIR class name
    module: str  # Flax module name of its parameters
    inputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        """A static attribute.

        Args:
          key: its name.
          default: the value when the node has no such attribute.

        Returns:
          The attribute's value, or ``default``.
        """
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


def from_nir(graph: NIRGraph | str | os.PathLike) -> tuple[NIRNetwork, Variables]:
    """A Flax model and its variables from a NIR graph (a ``nir.NIRGraph`` or a path to one).

    The model follows the model contract (:class:`noisesnn_jax.contract.SpikingModel`): it takes
    channels-last images ``[B, H, W, C]`` (or features ``[B, N]``), runs at ``timesteps=T`` as the
    graph does for ``T`` steps under the mapping of this module's docstring, and returns the output
    averaged over time ``[B, K]``; so it can be evaluated, counted and benchmarked like the zoo's
    models. Neuron metadata written by this library (``reset``, ``spike_condition``, ``v_init``)
    is honoured; without it a neuron follows NIR's definition (fire on ``v > v_threshold``, reset to
    ``v_reset = 0``, start at 0).

    Args:
      graph: a ``nir.NIRGraph``, or the path of a NIR file (``nir.write``).

    Returns:
      ``(model, variables)``: the :class:`NIRNetwork` and its ``{"params": ...}``.

    Raises:
      ExportError: the ``nir`` package is missing, a file that does not exist or parse, an
        unsupported node (named), shapes that do not chain, or neuron parameters outside the
        mapping.
    """
    nodes, edges = _checked_graph(_read_graph(graph))
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)
    spec, params, shapes = _import_nodes(nodes, preds, _toposort(list(nodes), edges))
    (output,) = (n for n in spec if n.kind == "Output")
    if len(shapes[output.name]) != 1:
        raise ExportError(f"the graph's output has shape {shapes[output.name]}; a classifier's output is [K]")
    return NIRNetwork(tuple(spec)), {"params": params}


def _checked_graph(graph: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The graph's nodes and edges, once every edge joins two nodes, every node is of a kind in
    :data:`NODE_KINDS`, and there is one Input and one Output."""
    nodes: dict[str, Any] = dict(graph.nodes)
    edges = [(str(a), str(b)) for a, b in graph.edges]
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise ExportError(f"the NIR graph has an edge {a!r} -> {b!r} to a node that does not exist")
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind not in NODE_KINDS:
            raise ExportError(f"node {name!r} is a {kind}, which is not imported (supported: {', '.join(SUPPORTED_NODES)})")
    inputs = [n for n, node in nodes.items() if type(node).__name__ == "Input"]
    outputs = [n for n, node in nodes.items() if type(node).__name__ == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; one of each is imported")
    return nodes, edges


def _import_nodes(nodes: dict[str, Any], preds: dict[str, list[str]],
                  order: list[str]) -> tuple[list[GraphNode], dict[str, Any], dict[str, tuple[int, ...]]]:
    """Each node, in topological order, read by its kind's rule: ``(spec, params, shapes)``."""
    params: dict[str, Any] = {}
    spec: list[GraphNode] = []
    shapes: dict[str, tuple[int, ...]] = {}
    used: set[str] = set()
    for name in order:
        node, ins = nodes[name], preds[name]
        kind = type(node).__name__
        shape, attrs, p = NODE_KINDS[kind].read(name, node, _input_shape(name, kind, ins, shapes))
        mod = _module_name(name, used)
        for suffix, value in (p or {}).items():  # a node's parameters, under its Flax name + suffix
            params[mod + suffix] = value
            used.add(mod + suffix)
        spec.append(GraphNode(name, kind, mod, tuple(ins), attrs))
        shapes[name] = shape
    return spec, params, shapes


def _input_shape(name: str, kind: str, ins: list[str], shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape a node receives (its inputs' sum); ``None`` for the graph's Input, which receives none."""
    if kind == "Input":
        if ins:
            raise ExportError(f"Input node {name!r} has incoming edges")
        return None
    if not ins:
        raise ExportError(f"node {name!r} ({kind}) has no input edge")
    in_shapes = {shapes[p] for p in ins}
    if len(in_shapes) != 1:
        raise ExportError(f"node {name!r} ({kind}) sums inputs of different shapes {sorted(in_shapes)}: the "
                          f"shapes do not chain")
    (shape_in,) = in_shapes
    return shape_in


def _module_name(name: str, used: set[str]) -> str:
    """A Flax name for the node ``name``, unused so far (it is added to ``used``)."""
    base = re.sub(r"\W", "_", name) or "node"
    base = base if base[0].isalpha() else f"n_{base}"
    m, i = base, 1
    while m in used:
        m, i = f"{base}_{i}", i + 1
    used.add(m)
    return m


# --- reading each kind of node: (name, node, shape it receives) -> (output shape, static attributes,
# parameters {suffix of the node's Flax name: value} or None)


def _need(name: str, kind: str, shape_in: tuple[int, ...], ndim: int) -> None:
    if len(shape_in) != ndim:
        raise ExportError(f"node {name!r} ({kind}) receives shape {shape_in}, expected {ndim}-D: the shapes do not "
                          f"chain")


def _read_input(name: str, node: Any, shape_in: None):
    shape = tuple(int(s) for s in np.ravel(node.input_type["input"]))
    return shape, (("shape", shape),), None


def _read_output(name: str, node: Any, shape_in: tuple[int, ...]):
    declared = node.output_type.get("output")
    if declared is not None and np.size(declared) and tuple(int(s) for s in np.ravel(declared)) != shape_in:
        raise ExportError(f"Output node {name!r} declares shape {tuple(np.ravel(declared))} but receives {shape_in}")
    return shape_in, (), None


def _conv_padding(name: str, node: Any, weight: np.ndarray, stride: tuple[int, int]) -> list[list[int]]:
    """A Conv2d node's padding as ``[[top, bottom], [left, right]]``."""
    pad = node.padding
    kh, kw = weight.shape[2:]
    if isinstance(pad, str) or (isinstance(pad, np.ndarray) and pad.dtype.kind in "SUO"):
        pad = _text(pad)
        if pad == "valid":
            return [[0, 0], [0, 0]]
        if pad == "same" and stride == (1, 1) and kh % 2 and kw % 2:
            return [[kh // 2, kh // 2], [kw // 2, kw // 2]]
        raise ExportError(f"node {name!r}: Conv2d padding {pad!r} with stride {stride} is not imported")
    p = [int(v) for v in np.broadcast_to(np.ravel(pad), (2,))]
    return [[p[0], p[0]], [p[1], p[1]]]


def _strip_zero_taps(weight: np.ndarray, pads: list[list[int]]) -> np.ndarray:
    """Zero taps at a border, the export's way of padding unevenly, taken back into ``pads`` (in place)."""
    for axis, pr in zip((2, 3), pads):
        while weight.shape[axis] > 1 and pr[0] > 0 and not np.any(np.take(weight, 0, axis=axis)):
            weight, pr[0] = np.delete(weight, 0, axis=axis), pr[0] - 1
        while weight.shape[axis] > 1 and pr[1] > 0 and not np.any(np.take(weight, -1, axis=axis)):
            weight, pr[1] = np.delete(weight, -1, axis=axis), pr[1] - 1
    return weight


def _read_conv(name: str, node: Any, shape_in: tuple[int, ...]):
    _need(name, "Conv2d", shape_in, 3)
    weight = np.asarray(node.weight, np.float32)
    if weight.ndim != 4 or weight.shape[1] != shape_in[0]:
        raise ExportError(f"node {name!r}: Conv2d weight {weight.shape} does not take {shape_in[0]} input channels")
    if int(node.groups) != 1 or tuple(np.ravel(node.dilation)) not in ((1, 1), (1,)):
        raise ExportError(f"node {name!r}: grouped or dilated Conv2d is not imported")
    stride = tuple(int(s) for s in np.broadcast_to(np.ravel(node.stride), (2,)))
    pads = _conv_padding(name, node, weight, stride)
    weight = _strip_zero_taps(weight, pads)
    kh, kw = weight.shape[2:]
    h = (shape_in[1] + sum(pads[0]) - kh) // stride[0] + 1
    w = (shape_in[2] + sum(pads[1]) - kw) // stride[1] + 1
    if h < 1 or w < 1:
        raise ExportError(f"node {name!r}: Conv2d on {shape_in} gives no output")
    bias = np.broadcast_to(np.asarray(node.bias, np.float32), (weight.shape[0],))
    attrs = (("features", weight.shape[0]), ("kernel", (kh, kw)), ("stride", stride),
             ("padding", tuple(tuple(p) for p in pads)))
    return (weight.shape[0], h, w), attrs, {"": {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)),
                                                 "bias": jnp.asarray(bias)}}


def _read_dense(name: str, node: Any, shape_in: tuple[int, ...]):
    kind = type(node).__name__  # Affine or Linear
    weight = np.asarray(node.weight, np.float32)
    if weight.ndim != 2 or len(shape_in) != 1 or weight.shape[1] != shape_in[0]:
        raise ExportError(f"node {name!r}: {kind} weight {weight.shape} does not take an input of shape {shape_in}: "
                          f"the shapes do not chain (flatten before it)")
    p = {"kernel": jnp.asarray(weight.T)}
    if kind == "Affine":
        p["bias"] = jnp.asarray(np.broadcast_to(np.asarray(node.bias, np.float32), (weight.shape[0],)))
    return (weight.shape[0],), (("features", weight.shape[0]), ("bias", kind == "Affine")), {"": p}


def _read_scale(name: str, node: Any, shape_in: tuple[int, ...]):
    scale = _layout(np.broadcast_to(np.asarray(node.scale, np.float32), shape_in))
    return shape_in, (("shape", scale.shape),), {"": jnp.asarray(scale)}


def _read_pool(name: str, node: Any, shape_in: tuple[int, ...]):
    kind = type(node).__name__  # AvgPool2d or SumPool2d
    _need(name, kind, shape_in, 3)
    k = tuple(int(v) for v in np.broadcast_to(np.ravel(node.kernel_size), (2,)))
    s = tuple(int(v) for v in np.broadcast_to(np.ravel(node.stride), (2,)))
    p = tuple(int(v) for v in np.broadcast_to(np.ravel(node.padding), (2,)))
    h, w = (shape_in[1] + 2 * p[0] - k[0]) // s[0] + 1, (shape_in[2] + 2 * p[1] - k[1]) // s[1] + 1
    if h < 1 or w < 1:
        raise ExportError(f"node {name!r}: {kind} {k} on {shape_in} gives no output")
    return (shape_in[0], h, w), (("window", k), ("stride", s), ("padding", p)), None


def _read_flatten(name: str, node: Any, shape_in: tuple[int, ...]):
    start, end = int(node.start_dim), int(node.end_dim)
    end = end if end >= 0 else len(shape_in) + end
    if start != 0 or end != len(shape_in) - 1:
        raise ExportError(f"node {name!r}: Flatten(start_dim={node.start_dim}, end_dim={node.end_dim}) of {shape_in} "
                          f"keeps some axes; only flattening every axis is imported")
    return (int(np.prod(shape_in)),), (), None


def _neuron_reset(name: str, node: Any, meta: dict[str, Any]) -> str:
    """The reset a neuron node asks for: ``subtract`` (this library's metadata) or ``zero``."""
    v_reset = np.asarray(node.v_reset if node.v_reset is not None else 0.0, np.float32)
    reset = meta.get("reset", "zero")
    if reset not in ("subtract", "zero"):
        raise ExportError(f"node {name!r}: reset {reset!r} is not imported (subtract or zero)")
    if reset == "zero" and np.any(v_reset != 0):
        raise ExportError(f"node {name!r}: v_reset other than 0 is not imported")
    return reset


def _neuron_tau(name: str, node: Any, shape_in: tuple[int, ...]) -> float | None:
    """A LIF node's one time constant (steps of dt = 1); ``None`` for IF."""
    if type(node).__name__ != "LIF":
        return None
    taus = _per_channel(node.tau, shape_in, name, "tau")
    if np.any(np.asarray(node.v_leak) != 0):
        raise ExportError(f"node {name!r}: LIF with v_leak other than 0 is not imported")
    if not np.all(taus == taus.flat[0]) or taus.flat[0] < 1:
        raise ExportError(f"node {name!r}: LIF tau must be one value >= 1 (time steps of dt = 1)")
    return float(taus.flat[0])


def _read_neuron(name: str, node: Any, shape_in: tuple[int, ...]):
    meta = {k: _text(v) for k, v in (node.metadata or {}).items()}
    theta = _per_channel(node.v_threshold, shape_in, name, "v_threshold")
    r = _per_channel(node.r, shape_in, name, "r")
    reset = _neuron_reset(name, node, meta)
    if np.any(theta <= 0):
        raise ExportError(f"node {name!r}: v_threshold must be > 0")
    if meta.get("spike_condition", ">") != ">=":  # fire on v > theta is fire on v >= the next float above theta
        theta = np.nextafter(theta, np.float32(np.inf)).astype(np.float32)
    mean = _per_channel(meta.get("v_init", 0.0), shape_in, name, "v_init") / theta
    if not np.allclose(mean, mean.flat[0], rtol=1e-6, atol=1e-7):
        raise ExportError(f"node {name!r}: v_init / v_threshold varies; one initial fraction per layer is imported")
    tau = _neuron_tau(name, node, shape_in)
    uniform = bool(np.all(theta == theta.flat[0]))
    attrs = (("tau", tau), ("reset", reset), ("mean", float(mean.flat[0])),
             ("threshold", float(theta.flat[0]) if uniform else None), ("unit", bool(np.all(theta == 1.0))))
    p: dict[str, Any] = {}  # the neuron layer's own threshold; r scales its input current
    if not uniform:
        p[""] = {"threshold": jnp.asarray(theta)}
    if not np.all(r == 1.0):
        attrs += (("r", len(r)),)
        p["_r"] = jnp.asarray(r)
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


class _Mode(NamedTuple):
    """How a :class:`NIRNetwork` call runs: its keyword arguments."""

    timesteps: int
    train: bool
    sample_noise: bool | None


# --- simulating each kind of node: (network, node, its summed input, whether that has a leading time
# axis, the call's mode) -> its output


def _apply_conv(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    return nn.Conv(node.attr("features"), node.attr("kernel"), strides=node.attr("stride"),
                   padding=node.attr("padding"), name=node.module)(h)


def _apply_dense(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    return nn.Dense(node.attr("features"), use_bias=node.attr("bias"), name=node.module)(h)


def _apply_scale(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    return h * net.param(node.module, nn.initializers.ones, node.attr("shape"), jnp.float32)


def _apply_pool(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    return _pool(h, node.kind, node.attr("window"), node.attr("stride"), node.attr("padding"))


def _apply_flatten(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    lead = 2 if timed else 1
    if h.ndim - lead == 3:
        h = jnp.moveaxis(h, -1, lead)  # [..., H, W, C] -> [..., C, H, W]: NIR's flattening order
    return h.reshape(h.shape[:lead] + (-1,))


def _apply_neuron(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    if node.attr("r"):
        h = h * net.param(f"{node.module}_r", nn.initializers.ones, (node.attr("r"),), jnp.float32)
    theta = node.attr("threshold")
    neuron = Neuron(threshold=theta if theta is not None else 1.0, tau=node.attr("tau"), reset=node.attr("reset"))
    layer = layers.SpikingNeuron(neuron, Noise(kind="none", mean=node.attr("mean")),
                                 learn_threshold=theta is None, name=node.module)
    T = mode.timesteps
    s = layer(h, timesteps=T, constant=T > 1 and not timed, train=mode.train, sample_noise=mode.sample_noise)
    if node.attr("unit"):
        return s
    if theta is None:
        theta = jnp.maximum(layer.variables["params"]["threshold"], 1e-3)  # as the layer uses it
    return s / theta  # amplitude 1, as NIR's spikes


def _apply_output(net: nn.Module, node: GraphNode, h: Array, timed: bool, mode: _Mode) -> Array:
    return h


@dataclasses.dataclass(frozen=True)
class NodeKind:
    """How one kind of NIR node is imported and simulated (an entry of :data:`NODE_KINDS`).

    Attributes:
      read: ``(name, node, shape) -> (output shape, attrs, params)``: the node checked and read,
        given the NIR shape it receives (``None`` for the Input); ``attrs`` are the
        :class:`GraphNode`'s static attributes, ``params`` ``{suffix: value}`` its parameters,
        stored under its Flax name plus the suffix (or ``None``: it has none).
      apply: ``(network, node, h, timed, mode) -> output``: the node run on ``h``, the sum of its
        inputs (``timed``: with a leading time axis) in a :class:`NIRNetwork` call; ``None`` for
        the Input, which takes the network's input.
      neuron: the node spikes, so its output has a time axis in a multi-step run.
    """

    read: Callable[[str, Any, Any], tuple[tuple[int, ...], tuple[tuple[str, Any], ...], dict[str, Any] | None]]
    apply: Callable[..., Array] | None  # (net, node, h, timed, mode) -> h
    neuron: bool = False


#: The NIR node kinds imported, each with its rules: adding a kind is one entry.
NODE_KINDS: dict[str, NodeKind] = {
    "Input": NodeKind(_read_input, None),
    "Output": NodeKind(_read_output, _apply_output),
    "Conv2d": NodeKind(_read_conv, _apply_conv),
    "Affine": NodeKind(_read_dense, _apply_dense),
    "Linear": NodeKind(_read_dense, _apply_dense),
    "Scale": NodeKind(_read_scale, _apply_scale),
    "AvgPool2d": NodeKind(_read_pool, _apply_pool),
    "SumPool2d": NodeKind(_read_pool, _apply_pool),
    "Flatten": NodeKind(_read_flatten, _apply_flatten),
    "IF": NodeKind(_read_neuron, _apply_neuron, neuron=True),
    "LIF": NodeKind(_read_neuron, _apply_neuron, neuron=True),
}
#: The spiking node kinds.
NEURON_NODES = tuple(k for k, kind in NODE_KINDS.items() if kind.neuron)
#: Every node kind imported.
SUPPORTED_NODES = tuple(NODE_KINDS)


class NIRNetwork(nn.Module):
    """A network imported from a NIR graph (:func:`from_nir`); follows the model contract.

    Attributes:
      graph: its nodes in topological order.
    """

    graph: tuple[GraphNode, ...]

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, timesteps: int = 1,
                 sample_noise: bool | None = None) -> Array:
        """Output ``[B, K]`` averaged over ``timesteps`` steps.

        Args:
          x: images ``[B, H, W, C]`` (channels-last) or features ``[B, N]``, of the graph's
            input shape.
          train: passed to the spiking layers (their noise is kind ``none``: no effect).
          timesteps: ``T``, the number of steps the graph runs.
          sample_noise: passed to the spiking layers.

        Returns:
          The graph's output averaged over the ``T`` steps, ``[B, K]``.

        Raises:
          ValueError: ``timesteps`` is not an integer >= 1, or ``x`` does not have the graph's
            input shape.
        """
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise ValueError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
        mode, T = _Mode(timesteps, train, sample_noise), timesteps
        values: dict[str, tuple[Array, bool]] = {}  # name -> (array, has a leading time axis)
        for node in self.graph:
            kind = NODE_KINDS[node.kind]
            if kind.apply is None:
                values[node.name] = (_network_input(node, x), False)
                continue
            ins = [values[n] for n in node.inputs]
            timed = T > 1 and any(t for _, t in ins)
            if timed:
                ins = [(a if t else jnp.broadcast_to(a, (T,) + a.shape), True) for a, t in ins]
            h = ins[0][0]
            for a, _ in ins[1:]:
                h = h + a
            values[node.name] = (kind.apply(self, node, h, timed, mode), timed or (T > 1 and kind.neuron))
        y, timed = next(values[n.name] for n in self.graph if n.kind == "Output")
        if T > 1 and not timed:
            y = jnp.broadcast_to(y, (T,) + y.shape)
        return layers.average_readout(self, y, T if T > 1 else 1)


def _network_input(node: GraphNode, x: Array) -> Array:
    """The network's input ``x`` as the Input node gives it: float32, channels last (features flattened)."""
    shape = node.attr("shape")
    want = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
    x = jnp.asarray(x, jnp.float32)
    if len(shape) == 1:
        x = x.reshape((x.shape[0], -1))
    if tuple(x.shape[1:]) != tuple(want):
        raise ValueError(f"NIRNetwork expects inputs [B, {', '.join(map(str, want))}] (channels last); "
                         f"got shape {tuple(x.shape)}")
    return x
