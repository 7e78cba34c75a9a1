"""One trace of a network's layer graph, shared by batch-norm folding (:mod:`noisesnn_jax.convert`),
NIR export (:mod:`noisesnn_jax.interop.nir`) and the exact early-exit rule
(:mod:`noisesnn_jax.early_exit`); it needs no optional package.

:func:`trace` runs a model once at ``T = 1`` in inference mode (noise at its mean) and records, in
the order they finish, the operations it sees:

- every Flax module call, through ``nn.intercept_methods``: ``nn.Conv`` is a ``conv`` node,
  ``nn.Dense`` a ``dense`` node, ``nn.BatchNorm`` a ``batch_norm`` node, and any other module a
  ``module`` node (a container such as the model or a block, or a layer without a rule: the
  consumer decides);
- every operation reported with :func:`record` while a trace is active: the functions of
  :mod:`noisesnn_jax.layers` (``pool``, ``flatten``, ``global_avg_pool``, ``add``, ``readout``) and
  the spiking layer (``spiking``, with its threshold), which reports itself instead of being
  recorded as a module.

Values are followed by identity from producer to consumer: each node's ``sources`` names, per input,
the node whose output it is, so an operation the trace does not see (``x * 2.0``, a reshape) breaks
the chain there and the consumer can name the layer that receives it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array, SpikingModel, Variables

#: The kinds of node a trace holds (:attr:`Node.op`).
OPS = ("conv", "dense", "batch_norm", "spiking", "pool", "flatten", "global_avg_pool", "add", "readout", "module")
# nodes whose output is a value of the network that later nodes consume
_PRODUCERS = frozenset(OPS) - {"readout", "module"}

_ACTIVE: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("noisesnn_trace", default=None)


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One operation of a traced call.

    Attributes:
      op: its kind, one of :data:`OPS`.
      inputs: the arrays it received (a module's first argument; every summand of ``add``).
      output: the array it returned.
      sources: per input, the index in :attr:`Trace.nodes` of the node whose output it is, or
        ``None``: the model's input, or the result of an operation the trace does not see.
      module: the bound module (module nodes and ``spiking``), else ``None``.
      path: the module's path of names (empty for a function).
      params: the module's ``params`` as the call saw them (empty for a function).
      attrs: the operation's static attributes: ``pool``: ``kind``, ``window``, ``stride``,
        ``padding``; ``readout``: ``timesteps``; ``spiking``: ``threshold`` (the threshold the
        layer used: a float, or one per channel).
    """

    op: str
    inputs: tuple[Any, ...]
    output: Any
    sources: tuple[int | None, ...]
    module: Any = None
    path: tuple[str, ...] = ()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Trace:
    """A traced call: its nodes in the order they finished.

    Attributes:
      nodes: the nodes; a node's ``sources`` index this tuple.
    """

    nodes: tuple[Node, ...]

    def source(self, node: Node, i: int = 0) -> Node | None:
        """The node whose output is ``node``'s ``i``-th input.

        Args:
          node: a node of this trace.
          i: which input.

        Returns:
          The producing node, or ``None`` when the input is the model's input or comes from an
          operation the trace does not see.
        """
        src = node.sources[i]
        return None if src is None else self.nodes[src]

    def readout(self) -> Node | None:
        """The last ``readout`` node (:func:`noisesnn_jax.layers.average_readout`).

        Returns:
          The node, or ``None`` when the model does not end with ``average_readout``.
        """
        return next((n for n in reversed(self.nodes) if n.op == "readout"), None)


class _Recorder:
    """The nodes of one trace, and the node that produced each array seen so far (by identity)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.producers: dict[int, tuple[Any, int]] = {}  # id of an output -> (output, node index)

    def source(self, array: Any) -> int | None:
        seen = self.producers.get(id(array))
        return seen[1] if seen is not None and seen[0] is array else None

    def add(self, op: str, inputs: tuple[Any, ...], output: Any, module: Any, attrs: dict[str, Any]) -> None:
        path = tuple(module.scope.path) if module is not None and module.scope is not None else ()
        params = module.variables.get("params", {}) if module is not None else {}
        node = Node(op, tuple(inputs), output, tuple(self.source(a) for a in inputs), module, path, params, attrs)
        self.nodes.append(node)
        if op in _PRODUCERS:  # the output is kept in the node, so its id is not reused
            self.producers[id(output)] = (output, len(self.nodes) - 1)


def record(op: str, inputs: tuple[Array, ...], output: Array, *, module: nn.Module | None = None,
           **attrs: Any) -> Array:
    """Report an operation to the active trace, if any (the layers call it; a no-op otherwise).

    Args:
      op: the operation's kind, one of :data:`OPS`.
      inputs: the arrays it received.
      output: the array it returns.
      module: the module that reports itself (``spiking``); it is then not recorded again as a
        ``module`` node.
      **attrs: its static attributes (:attr:`Node.attrs`).

    Returns:
      ``output``, unchanged.
    """
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.add(op, inputs, output, module, attrs)
    return output


@contextlib.contextmanager
def _recording() -> Iterator[_Recorder]:
    """Record the reported operations and the module calls while the context is active."""
    recorder = _Recorder()

    def interceptor(next_fun, args, kwargs, context):
        start = len(recorder.nodes)
        out = next_fun(*args, **kwargs)
        mod = context.module
        if context.method_name != "__call__" or any(n.module is mod for n in recorder.nodes[start:]):
            return out  # another method, or a module that reported itself
        op = ("conv" if isinstance(mod, nn.Conv) else "dense" if isinstance(mod, nn.Dense)
              else "batch_norm" if isinstance(mod, nn.BatchNorm) else "module")
        recorder.add(op, tuple(args[:1]), out, mod, {})
        return out

    token = _ACTIVE.set(recorder)
    try:
        with nn.intercept_methods(interceptor):
            yield recorder
    finally:
        _ACTIVE.reset(token)


def example_spec(example: Array | jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an input batch, for tracing without computing.

    Args:
      example: an input batch ``[B, ...]`` (any array, for example ``jnp.zeros((8, 28, 28, 1))``),
        or already a ``jax.ShapeDtypeStruct``, which is returned as it is.

    Returns:
      A ``jax.ShapeDtypeStruct`` with the batch's shape and dtype; no data is kept.
    """
    if isinstance(example, jax.ShapeDtypeStruct):
        return example
    example = jnp.asarray(example)
    return jax.ShapeDtypeStruct(example.shape, example.dtype)


def trace(model: SpikingModel, variables: Variables, example: Array, *, abstract: bool = False) -> Trace:
    """Run ``model`` once at ``T = 1`` in inference mode and record its layer graph.

    The model is traced as it is: fold its batch norms first (:func:`noisesnn_jax.convert.fold_batchnorm`)
    to see the network that runs at ``T = N``.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      example: an input batch ``[B, ...]``; with ``abstract``, its ``jax.ShapeDtypeStruct`` will do.
      abstract: trace shapes only (``jax.eval_shape``: no computation); the nodes then hold
        abstract values instead of arrays.

    Returns:
      The :class:`Trace`.
    """
    def run(v: Variables, x: Array) -> Array:
        return model.apply(v, x, train=False, timesteps=1, sample_noise=False)

    with _recording() as recorder:
        if abstract:
            jax.eval_shape(run, variables, example_spec(example))
        else:
            run(variables, jnp.asarray(example))
    return Trace(tuple(recorder.nodes))
