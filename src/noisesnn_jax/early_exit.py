"""Dynamic T: per-sample early exit at inference.

The multi-step network runs one time step at a time (the model's ``stateful`` step, potentials
carried between calls) and keeps, per sample, the sum ``S_t`` of the readout's logits over the
steps so far; its prediction after ``t`` steps is ``argmax S_t`` (the prediction of the network
run for ``T = t``). After each step, a rule decides which samples are settled; those leave the
batch, which is compacted (the remaining rows gathered, padded up to a power of two so that only
a few shapes compile), so a finished sample costs nothing more. Rules:

- ``margin:m``: stop when the mean logits' top two differ by at least ``m``;
- ``confidence:p``: stop when the softmax of the mean logits gives the leader at least ``p``;
- ``exact``: stop when no spikes the remaining ``T - t`` steps could bring can change the
  prediction of the full ``T`` steps. Each step adds ``z = W f + b`` to ``S``, where ``f`` is the
  readout's input: spikes of amplitude 1 or their averages (pooling), so ``0 <= f <= 1`` (spike
  amplitudes are folded into ``W``, read from the network's trace, :mod:`noisesnn_jax.tracing`). Hence
  ``z_c - z_k >= D_ck = (b_c - b_k) + sum_j min(0, W_cj - W_kj)`` for every step, and the leader
  ``c`` stays the leader through step ``T`` when ``S_c - S_k + (T - t) D_ck > 0`` for all ``k``.
  The bound is exact in the sense that stopping never changes the full-T prediction (tested); it
  is loose (any spike pattern is allowed), so it stops late.

``min_steps`` (default 1) steps run before any rule may stop a sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import tracing
from noisesnn_jax.contract import Array, SpikingModel, Variables, check_inputs
from noisesnn_jax.convert import fold_batchnorm
from noisesnn_jax.errors import ConfigError, ExportError
from noisesnn_jax.layers import READOUT_COLLECTION

RULES = ("margin", "confidence", "exact")
_MIN_BUCKET = 8


@dataclasses.dataclass(frozen=True)
class ExitRule:
    """When a sample stops.

    Attributes:
      kind: ``margin``, ``confidence`` or ``exact`` (:data:`RULES`; see the module docstring).
      threshold: the margin (mean-logit units, >= 0) or the confidence (a probability in
        (0, 1)); unused by ``exact``.
      min_steps: steps every sample runs before any rule may stop it.

    Raises:
      ConfigError: an unknown ``kind``, a threshold out of range, or ``min_steps < 1``.
    """

    kind: str = "margin"
    threshold: float = 1.0
    min_steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ConfigError(f"early-exit rule {self.kind!r} is unknown; choose one of {list(RULES)}")
        if self.kind == "confidence" and not 0 < self.threshold < 1:
            raise ConfigError(f"confidence threshold {self.threshold!r} is invalid; it must be in (0, 1)")
        if self.kind == "margin" and not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ConfigError(f"margin threshold {self.threshold!r} is invalid; it must be a number >= 0")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ConfigError(f"min_steps={self.min_steps!r} is invalid; it must be an integer >= 1")

    @classmethod
    def parse(cls, text: str) -> ExitRule:
        """Read a rule from its command-line form.

        Args:
          text: ``exact``, ``margin:M`` or ``confidence:P``, optionally followed by ``,min=K``
            (``min_steps``).

        Returns:
          The rule.

        Raises:
          ConfigError: ``text`` is not one of these forms, or a value is out of range.
        """
        head, _, rest = text.partition(",")
        kind, _, value = head.partition(":")
        min_steps = 1
        if rest:
            key, _, v = rest.partition("=")
            if key != "min" or not v.isdigit():
                raise ConfigError(f"early-exit option {rest!r} is invalid; the only option is min=K (steps)")
            min_steps = int(v)
        if kind == "exact":
            if value:
                raise ConfigError("the exact rule takes no threshold; write exact")
            return cls("exact", 0.0, min_steps)
        try:
            threshold = float(value)
        except ValueError:
            raise ConfigError(f"early-exit rule {text!r} is invalid; write exact, margin:M or confidence:P") from None
        return cls(kind, threshold, min_steps)


def readout_bound(model: SpikingModel, variables: Variables, example: Array | np.ndarray) -> np.ndarray:
    """The exact rule's bound ``D [K, K]`` on what one step can add to two classes' logits.

    ``D_ck`` is a lower bound on ``z_c - z_k``, the difference any one step can add to the summed
    logits of classes ``c`` and ``k`` (see the module docstring). Found from the trace of the
    batch-norm-folded network (:func:`noisesnn_jax.tracing.trace`): the readout's weights, scaled
    by the largest value each of its inputs takes (the spike amplitude of the layer that feeds it).

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      example: an input batch ``[B, ...]`` to trace the network with.

    Returns:
      ``D``, float64 ``[K, K]``.

    Raises:
      ExportError: batch norm that cannot be folded, a model that does not end with one dense
        readout, or a readout that is not an affine map of spikes (or their averages).
    """
    example = np.asarray(example, np.float32)
    variables = {k: c for k, c in variables.items() if k not in (READOUT_COLLECTION, "intermediates")}
    try:
        model, variables = fold_batchnorm(model, variables, example)
    except ValueError as e:
        raise ExportError(f"batch norm cannot be folded for the exact early-exit rule: {e}") from None
    graph = tracing.trace(model, variables, example)
    end = graph.readout()
    readout = None if end is None else graph.source(end)
    if readout is None or readout.op != "dense":
        raise ExportError("the exact early-exit rule needs a model whose output is one dense readout")
    kernel = np.asarray(readout.params["kernel"], np.float32)  # [N, K]
    upper = _input_range(graph, readout).astype(np.float32)  # as the readout's weights take the spike amplitude
    w = np.asarray((kernel * upper[:, None]).T, np.float64)
    b = np.asarray(readout.params["bias"], np.float64) if "bias" in readout.params else np.zeros(w.shape[0])
    diff = w[:, None, :] - w[None, :, :]  # [c, k, j]
    return (b[:, None] - b[None, :]) + np.minimum(diff, 0.0).sum(-1)


def _input_range(graph: tracing.Trace, node: tracing.Node) -> np.ndarray:
    """Per feature, the largest value the input of ``node`` takes (its least is 0): spikes of
    amplitude ``theta`` reach it through average pooling and flattening only."""
    def upper(n: tracing.Node | None) -> np.ndarray:  # over one example's axes of n's output
        if n is None:
            raise ExportError("the exact early-exit rule needs the readout fed by spikes; it is fed by the model's "
                              "input or by an operation the trace does not see")
        if n.op == "spiking":
            return np.broadcast_to(np.asarray(n.attrs["threshold"], np.float32), n.output.shape[1:])
        if not (n.op in ("add", "flatten", "global_avg_pool") or n.op == "pool" and n.attrs["kind"] == "avg"):
            what = f"{n.attrs['kind']} pool" if n.op == "pool" else "/".join(n.path) or n.op
            raise ExportError(f"the exact early-exit rule needs the readout fed by spikes through average pooling "
                              f"or flattening; {what!r} lies between them")
        if len(n.inputs) != 1:
            raise ExportError(f"the exact early-exit rule needs the readout fed by spikes alone; {n.op} sums "
                              f"{len(n.inputs)} inputs")
        up = upper(graph.source(n))
        if n.op == "flatten":
            return up.reshape(-1)
        if n.op == "add":
            return up
        return np.broadcast_to(up.max(axis=(0, 1)), n.output.shape[1:])  # pooled: the window's largest

    return upper(graph.source(node)).reshape(-1)


@functools.lru_cache(maxsize=16)
def _chunk_fn(model: Any):
    """Jitted ``(variables, state, x, steps, piece, count) -> (logits [k, B, K], state, events [k, B])``:
    ``k = steps`` steps of the stateful network from ``state`` (``{}``: from the neurons' initial
    potentials), the rows in pieces of ``piece`` (``lax.map``) as in
    :func:`noisesnn_jax.evaluate.predict`. The steps of one piece run in one unrolled loop, so the
    input layer's current, the same at every step, is computed once per chunk. ``count=False``
    leaves the synaptic events (after the first layer) at zero and skips counting them."""
    import flax.linen as nn

    from noisesnn_jax import ops
    from noisesnn_jax.layers import STATE_COLLECTION

    def step(variables, state, x, count):
        seen: list = []

        def counter(next_fun, args, kwargs, context):
            mod = context.module
            if context.method_name == "__call__" and isinstance(mod, (nn.Conv, nn.Dense)):
                a = args[0]  # [B, ...]; the fan-out map is a compile-time constant
                spikes = (a != 0).astype(jnp.float32).reshape(a.shape[0], -1)
                seen.append(spikes @ ops.fanout(mod, a.shape[1:]).reshape(-1))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(counter) if count else contextlib.nullcontext():
            logits, new = model.apply({**variables, STATE_COLLECTION: state}, x, stateful=True,
                                      mutable=[STATE_COLLECTION])
        events = sum(seen[1:], jnp.zeros(x.shape[0]))  # the first layer's MACs are counted once, apart
        return logits, new[STATE_COLLECTION], events

    def steps_of(variables, state, x, k, count):
        first = []
        if not state:  # the first step creates each neuron's potential: outside the loop
            logits, state, ev = step(variables, state, x, count)
            first, k = [(logits[None], ev[None])], k - 1
        if k:
            def body(s, _):
                logits, s, ev = step(variables, s, x, count)
                return s, (logits, ev)

            state, (logits, ev) = jax.lax.scan(body, state, None, length=k, unroll=True)
            first.append((logits, ev))
        return (jnp.concatenate([f[0] for f in first]), state, jnp.concatenate([f[1] for f in first]))

    def chunk(variables, state, x, k, piece, count):
        rows = x.shape[0]
        if piece >= rows or rows % piece:
            return steps_of(variables, state, x, k, count)
        split = lambda a: a.reshape((rows // piece, piece) + a.shape[1:])  # noqa: E731
        logits, state, ev = jax.lax.map(lambda sx: steps_of(variables, *sx, k, count),
                                        jax.tree_util.tree_map(split, (state, x)))
        join = lambda a: jnp.swapaxes(a, 0, 1).reshape((k, rows) + a.shape[3:])  # [P, k, piece, ...] -> [k, B, ...]  # noqa: E731
        return join(logits), jax.tree_util.tree_map(lambda a: a.reshape((rows,) + a.shape[2:]), state), join(ev)

    return jax.jit(chunk, static_argnums=(3, 4, 5))


def _bucket(n: int) -> int:
    """Rows a batch of ``n`` live samples is padded to: few compiled shapes (eight per octave),
    little padding (at most an eighth)."""
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    grain = max(1, 1 << ((int(n) - 1).bit_length() - 4))  # an eighth of the octave (n/2, n]
    return -(-int(n) // grain) * grain


def chunk_schedule(max_timesteps: int, chunks: Sequence[int] | None = None, min_steps: int = 1) -> list[int]:
    """How many steps each chunk of :func:`predict_early_exit` runs before the live samples are
    compacted: ``chunks`` (its last entry repeated), cut to end at ``max_timesteps``.

    The default, ``None``, starts with ``min_steps`` and then doubles the steps run so far
    (chunks ending at steps 1, 2, 4, 8, ...): few round trips to the host, and little work for
    samples that stop inside a chunk. Decisions do not depend on the chunks: every step's rule is
    applied to every sample.

    Args:
      max_timesteps: ``T``.
      chunks: steps per chunk, each an integer >= 1; ``None`` for the default.
      min_steps: the rule's ``min_steps`` (the default's first chunk).

    Returns:
      Positive step counts summing to ``max_timesteps``.

    Raises:
      ConfigError: ``chunks`` is empty or holds a value that is not an integer >= 1.
    """
    if chunks is None:
        sizes, done = [max(1, min(int(min_steps), max_timesteps))], max(1, min(int(min_steps), max_timesteps))
        while done < max_timesteps:
            sizes.append(min(done, max_timesteps - done))
            done += sizes[-1]
        return sizes
    chunks = list(chunks)
    if not chunks or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in chunks):
        raise ConfigError(f"chunks={chunks!r} is invalid; give steps per chunk, integers >= 1")
    sizes, done, i = [], 0, 0
    while done < max_timesteps:
        sizes.append(min(int(chunks[min(i, len(chunks) - 1)]), max_timesteps - done))
        done, i = done + sizes[-1], i + 1
    return sizes


def predict_early_exit(model: SpikingModel, variables: Variables, images: Array | np.ndarray, max_timesteps: int,
                       rule: ExitRule, bound: np.ndarray | None = None, *, chunks: Sequence[int] | None = None,
                       count_events: bool = True) -> dict[str, np.ndarray]:
    """Run up to ``max_timesteps`` steps per sample, each sample stopping by ``rule``.

    The network runs in chunks of steps (:func:`chunk_schedule`) on the compiled fast path; after
    each chunk the samples that stopped leave the batch, which is compacted (to few padded sizes,
    eight per octave) with the neurons' potentials. Inside a chunk the rule is applied after every
    step, and a sample's logits and events count up to the step it stopped at, so the decisions
    are those of a step-by-step run, and of :func:`simulate_rule`, whatever the chunks.

    The model must take ``stateful=True`` (the zoo's do) and start its neurons from their
    ``neuron_state`` initial value.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      images: the batch ``[B, ...]`` (cast to float32).
      max_timesteps: ``T``, the most steps a sample runs.
      rule: when a sample stops.
      bound: the exact rule's :func:`readout_bound`; ``None`` computes it when needed.
      chunks: steps per chunk (:func:`chunk_schedule`); ``None``: 1, 1, 2, 4, ... steps.
      count_events: count the synaptic events (else ``events`` is zeros; a little faster).

    Returns:
      ``predictions [B]``, ``steps [B]`` (steps each sample ran) and ``events [B]`` (its
      synaptic events after the first layer, summed over its steps).

    Raises:
      ConfigError: ``max_timesteps`` is not an integer >= 1, or invalid ``chunks``.
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``images`` or a model whose output is not ``[B, K]``.
      ExportError: the exact rule on a network whose readout bound cannot be found.
    """
    if isinstance(max_timesteps, bool) or not isinstance(max_timesteps, int) or max_timesteps < 1:
        raise ConfigError(f"max_timesteps={max_timesteps!r} is invalid; it must be an integer >= 1")
    schedule = chunk_schedule(max_timesteps, chunks, rule.min_steps)
    images = np.asarray(images, np.float32)
    check_inputs(model, variables, images, max_timesteps)
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    if rule.kind == "exact" and bound is None:
        bound = readout_bound(model, variables, images[: min(len(images), 8)])
    from noisesnn_jax.pieces import microbatch_size

    n, run = len(images), _chunk_fn(model)
    rows = np.minimum(np.arange(_bucket(n)), n - 1)  # padded rows repeat the last sample and are ignored
    x = jnp.asarray(images[rows])
    state: Any = {}  # empty: the first step creates each neuron's potential at its initial value
    active = np.arange(n)  # sample index of each live row
    tally = _Tally(rule, bound, max_timesteps, n)
    t = 0
    for k in schedule:
        logits, state, ev = run(variables, state, x, k, microbatch_size(model, variables, x, 1), count_events)
        live = tally.chunk(active, np.asarray(logits, np.float64)[:, :len(active)],
                           np.asarray(ev, np.float64)[:, :len(active)], t)
        t += k
        if not live.any():
            break
        keep = np.flatnonzero(live)
        active = active[keep]
        idx = np.concatenate([keep, np.full(_bucket(len(keep)) - len(keep), keep[-1])])
        x = x[idx]
        state = jax.tree_util.tree_map(lambda a: a[idx], state)
    return {"predictions": tally.predictions, "steps": tally.steps, "events": tally.events}


class _Tally:
    """What an early-exit run of ``n`` samples has decided so far: per sample, its summed logits,
    the steps it ran, its synaptic events and (once it stopped) its prediction."""

    def __init__(self, rule: ExitRule, bound: np.ndarray | None, max_timesteps: int, n: int) -> None:
        self.rule, self.bound, self.T = rule, bound, max_timesteps
        self.sums: np.ndarray | None = None  # [n, K], made at the first chunk
        self.steps = np.zeros(n, np.int64)
        self.events = np.zeros(n, np.float64)
        self.predictions = np.zeros(n, np.int64)

    def chunk(self, active: np.ndarray, logits: np.ndarray, events: np.ndarray, t: int) -> np.ndarray:
        """Apply one chunk's per-step ``logits [k, live, K]`` and ``events [k, live]`` (steps ``t+1``
        .. ``t+k``) to the live samples ``active``, step by step: sums, steps and events grow up to
        the step each sample stops at. Returns which rows are still live after the chunk."""
        if self.sums is None:
            self.sums = np.zeros((len(self.steps), logits.shape[-1]), np.float64)
        sums, live = self.sums, np.ones(len(active), bool)
        for j in range(len(logits)):
            step = t + j + 1
            rows = np.flatnonzero(live)
            who = active[rows]
            sums[who] += logits[j, rows]
            self.steps[who] = step
            self.events[who] += events[j, rows]
            if step == self.T:
                done = np.ones(len(rows), bool)
            elif step >= self.rule.min_steps:
                done = _settled(self.rule, sums[who], step, self.T, self.bound)
            else:
                continue
            self.predictions[who[done]] = np.argmax(sums[who[done]], -1)
            live[rows[done]] = False
        return live


def _settled(rule: ExitRule, sums: np.ndarray, t: int, T: int, bound: np.ndarray | None) -> np.ndarray:
    """Which rows (summed logits after ``t`` steps) may stop."""
    mean = sums / t
    if rule.kind == "margin":
        top2 = np.sort(mean, axis=-1)[:, -2:]
        return top2[:, 1] - top2[:, 0] >= rule.threshold
    if rule.kind == "confidence":
        z = mean - mean.max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        return p.max(-1) >= rule.threshold
    lead = np.argmax(sums, -1)
    remaining = T - t
    gap = sums[np.arange(len(sums)), lead][:, None] - sums + remaining * bound[lead]  # [rows, K]
    gap[np.arange(len(sums)), lead] = np.inf
    # a safety margin for float rounding between this sum and the full-T run's
    tol = 1e-6 * (np.abs(sums).max(-1, keepdims=True) + remaining * np.abs(bound).max() + 1.0)
    return np.all(gap > tol, axis=-1)


def simulate_rule(step_logits: Array | np.ndarray, rule: ExitRule,
                  bound: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What :func:`predict_early_exit` decides, computed from the per-step readout of a full run.

    Cheap, so a threshold can be chosen by sweeping it over a validation set.

    Args:
      step_logits: the per-step logits ``[T, B, K]`` (:func:`noisesnn_jax.evaluate.step_logits`).
      rule: when a sample stops.
      bound: the exact rule's :func:`readout_bound` (required for ``exact``).

    Returns:
      ``predictions [B]`` and ``steps [B]``.
    """
    logits = np.asarray(step_logits, np.float64)
    T, n = logits.shape[:2]
    sums = np.cumsum(logits, axis=0)
    steps = np.full(n, T)
    preds = np.argmax(sums[-1], -1)
    live = np.ones(n, bool)
    for t in range(max(1, rule.min_steps), T):
        idx = np.flatnonzero(live)
        done = _settled(rule, sums[t - 1, idx], t, T, bound)
        steps[idx[done]] = t
        preds[idx[done]] = np.argmax(sums[t - 1, idx[done]], -1)
        live[idx[done]] = False
    return {"predictions": preds, "steps": steps}


def evaluate_early_exit(model: SpikingModel, variables: Variables, x: np.ndarray, y: np.ndarray, max_timesteps: int,
                        rule: ExitRule, *, batch_size: int = 500, repeats: int = 1,
                        chunks: Sequence[int] | None = None) -> dict[str, Any]:
    """Accuracy, steps used, synaptic operations and wall time of early exit, beside the fixed-``T`` run.

    Wall times: the median of ``repeats`` passes over the data, early exit and fixed T
    interleaved, after one untimed pass each (which compiles every shape, and in which early exit
    counts its synaptic events; the timed passes do not count them, as the fixed run does not).

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      x: the examples ``[N, ...]``.
      y: their integer labels ``[N]``.
      max_timesteps: ``T`` of the fixed run and the most steps of early exit.
      rule: when a sample stops.
      batch_size: examples per batch.
      repeats: timed passes of each run.
      chunks: early exit's steps per chunk (:func:`chunk_schedule`); ``None``: 1, 1, 2, 4, ...

    Returns:
      A JSON-serializable report: ``rule``, ``max_timesteps``, ``images``, ``accuracy``,
      ``fixed_accuracy``, ``same_as_fixed`` (predictions equal to the fixed run's),
      ``mean_steps``, ``steps_histogram``, ``sops`` and ``fixed_sops`` (per image),
      ``first_layer_macs``, ``wall_seconds``, ``fixed_wall_seconds`` and ``repeats``.

    Raises:
      ConfigError: ``max_timesteps`` is not an integer >= 1, or invalid ``chunks``.
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid examples, a model whose output is not ``[B, K]``, or ``repeats < 1``.
      ExportError: the exact rule on a network whose readout bound cannot be found.
    """
    from noisesnn_jax import timing
    from noisesnn_jax.evaluate import predict
    from noisesnn_jax.ops import count_ops

    x, y = np.asarray(x, np.float32), np.asarray(y)
    bound = readout_bound(model, variables, x[:8]) if rule.kind == "exact" else None
    early: dict[str, list] = {}
    fixed: list = []

    def run_early() -> None:
        count = not early  # the untimed first pass counts the events; the timed ones do not
        runs = [predict_early_exit(model, variables, x[s:s + batch_size], max_timesteps, rule, bound,
                                   chunks=chunks, count_events=count) for s in range(0, len(x), batch_size)]
        if count:
            early.update({k: [r[k] for r in runs] for k in runs[0]})

    def run_fixed() -> None:
        fixed.clear()
        for s in range(0, len(x), batch_size):
            fixed.append(np.asarray(jnp.argmax(predict(model, variables, x[s:s + batch_size], max_timesteps)[0], -1)))

    wall = timing.measure({"early": run_early, "fixed": run_fixed}, repeats=repeats, warmup=1)
    preds, steps, events = (np.concatenate(early[k]) for k in ("predictions", "steps", "events"))
    fixed_preds = np.concatenate(fixed)
    fixed_ops = count_ops(model, variables, x[: min(len(x), 100)], max_timesteps)
    return {
        "rule": dataclasses.asdict(rule), "max_timesteps": max_timesteps, "images": int(len(y)),
        "accuracy": float(np.mean(preds == y)), "fixed_accuracy": float(np.mean(fixed_preds == y)),
        "same_as_fixed": int(np.sum(preds == fixed_preds)),
        "mean_steps": float(steps.mean()),
        "steps_histogram": {int(t): int(np.sum(steps == t)) for t in range(1, max_timesteps + 1)},
        "sops": float(events.mean()), "fixed_sops": float(fixed_ops["sops"]),
        "first_layer_macs": float(fixed_ops["first_layer_macs"]),
        "wall_seconds": wall["early"], "fixed_wall_seconds": wall["fixed"], "repeats": repeats,
    }
