"""How cost grows: training step time and memory against T and batch size, inference time against T.

    python benchmarks/scaling.py --out benchmarks/results [--config experiments/configs/fashion_mnist.py]
                                 [--batch 128] [--infer-batch 500] [--repeats 7] [--quick] [--no-peers]

The network is the model of ``--config`` (default: the Fashion-MNIST CNN of
``experiments/configs/fashion_mnist.py``) on random images of its dataset's shape (28x28x1 there);
no dataset is read. Measured, each group side by side in one process (cases interleaved
round-robin after warm-up, each timed call right after an untimed call of the same case, the
median of ``--repeats``; ``noisesnn_jax.timing.measure`` with ``settle=1``):

1. The training step against T = 1, 2, 4, 8, 16 at ``--batch``: ours (the config's T=1 noisy
   training) and spike-based BPTT on the same network (``method=bptt``: no noise, v0 = 0, arctan
   surrogate, as ``experiments/fashion_mnist.py`` trains it; ``train_step(timesteps=T)``), with
   the compiled step's temporary memory (XLA's memory analysis). Ours trains at T=1 whatever T
   the network is deployed at: its step does not depend on T, so it is measured once and that one
   measurement stands on every row. SpikingJelly's multi-step BPTT step on the same layout (where
   installed: ``make install-peers``) is timed beside them.
2. The deployed network's inference against T (BN folded, ``evaluate.infer``: ``predict``'s logits
   without reading the firing rates back) at ``--infer-batch``: what does grow with T for ours.
3. The training step against batch size (16 .. 256): ours, and BPTT at T=4.

Then least-squares slopes (time and memory per time step, time and memory per image) and the
ratio BPTT / ours at each T. Writes ``scaling.json`` and ``scaling.md`` (with the machine and the
command; each replaced whole) and ``scaling.png`` (step time and memory against T) in ``--out``.
``--quick`` shrinks everything (a 2-layer CNN, T up to 4, batches 4 and 8) to check the script.
"""

from __future__ import annotations

import os

# PyTorch peers on a small shared CPU: passive OpenMP waiting (as benchmarks/bench.py; before torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import convert, evaluate, timing
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.state import build_model, create_state, make_optimizer
from noisesnn_jax.run.train import train_step

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "configs", "fashion_mnist.py")
TIMESTEPS = (1, 2, 4, 8, 16)
BATCHES = (16, 32, 64, 128, 256)
BATCH_SWEEP_T = 4  # BPTT's T in the batch sweep
# BPTT as experiments/fashion_mnist.py trains it (its T is set per case here).
BPTT = ["--config.method=bptt", "--config.noise.kind=none", "--config.noise.mean=0.0",
        "--config.neuron.surrogate=atan"]
# --quick: tiny sizes, to check the script (the test), not to measure
QUICK = {"timesteps": (1, 2, 4), "batches": (4, 8), "batch": 8, "infer_batch": 8, "repeats": 2, "warmup": 1}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` through the points.

    Args:
      xs: the abscissas (at least two different values).
      ys: the ordinates, one per ``x``.

    Returns:
      ``{"slope", "intercept"}``.

    Raises:
      ValueError: different lengths, or fewer than two different ``x``.
    """
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(set(x.tolist())) < 2:
        raise ValueError(f"fit_line needs as many ys as xs and two different xs; got xs={list(xs)}, ys={list(ys)}")
    dx = x - x.mean()
    slope = float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))
    return {"slope": slope, "intercept": float(y.mean() - slope * x.mean())}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def configs(path: str, quick: bool = False) -> tuple[Any, Any]:
    """``(ours, bptt)``: the config at ``path`` as T=1 noisy training, and as BPTT (validated).
    ``quick`` narrows a CNN to channels (4, 8)."""
    out = []
    for overrides in (["--config.method=noisy"], BPTT):
        c = config_lib.apply_overrides(config_lib.load_config(path), overrides)
        if quick and c.model.name == "cnn":
            c.model.channels, c.model.pool_after = (4, 8), (0, 1)
        out.append(config_lib.validate(c))
    return out[0], out[1]


def input_spec(config: Any) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of the config's dataset, without reading a TFDS dataset
    (an embedded one, small, is loaded)."""
    from noisesnn_jax.data.tfds import SPECS

    d = config.dataset
    if d.name in SPECS:
        s = SPECS[d.name]
        side = int(d.image_size) or s.image_size
        return (side, side, s.channels), s.num_classes
    from noisesnn_jax.data import dataset_from_config

    ds = dataset_from_config(config)
    return tuple(ds.input_shape), int(ds.num_classes)


class Cases:
    """Compiled training steps and inference calls on fixed random data, built once per key."""

    def __init__(self, ours: Any, bptt: Any, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.cfg = {"ours": ours, "bptt": bptt}
        self.shape, self.K = input_shape, num_classes
        self.train: dict[tuple[str, int, int], tuple[Callable[[], None], float]] = {}
        self._models: dict[str, Any] = {}
        self._states: dict[str, Any] = {}
        self._deployed: Any = None

    def model_and_state(self, method: str) -> tuple[Any, Any]:
        """The model of ``method`` and its initial train state (initialized once: a step donates its
        state, so each case takes a copy)."""
        if method not in self._states:
            c = self.cfg[method]
            self._models[method] = build_model(c, self.K)
            self._states[method] = create_state(self._models[method], make_optimizer(c, 1000), self.shape,
                                                jax.random.key(0))
        return self._models[method], self._states[method]

    def images(self, batch: int) -> jax.Array:
        return jnp.asarray(np.random.default_rng(0).normal(size=(batch,) + self.shape), jnp.float32)

    def train_step(self, method: str, batch: int, T: int) -> tuple[Callable[[], None], float]:
        """One jitted training step of ``method`` ("ours" at T=1, "bptt") at ``batch`` and ``T``:
        ``(run once, temp MiB of the compiled step)``."""
        key = (method, batch, T)
        if key not in self.train:
            _log(f"compiling the training step: {method}, batch {batch}, T={T} ...")
            c = self.cfg[method]
            state = jax.tree.map(jnp.copy, self.model_and_state(method)[1])
            x = self.images(batch)
            y = jnp.asarray(np.random.default_rng(1).integers(0, self.K, batch), jnp.int32)
            step = functools.partial(train_step, num_classes=self.K, label_smoothing=float(c.train.label_smoothing),
                                     timesteps=T)
            compiled = jax.jit(step, donate_argnums=0).lower(state, x, y, jax.random.key(1)).compile()
            box = {"s": state}

            def run() -> None:
                box["s"], m = compiled(box["s"], x, y, jax.random.key(1))
                jax.block_until_ready(m)

            self.train[key] = (run, _temp_mib(compiled))
        return self.train[key]

    def inference(self, batch: int, T: int) -> Callable[[], None]:
        """The deployed network's (ours, BN folded) inference at ``T`` on ``batch`` images."""
        x = self.images(batch)
        if self._deployed is None:  # ours' initial variables, BN folded
            model, state = self.model_and_state("ours")
            self._deployed = convert.fold_batchnorm(model, {"params": state.params, "batch_stats": state.batch_stats},
                                                    x[:1])
        fm, fv = self._deployed
        _log(f"compiling inference: batch {batch}, T={T} ...")
        jax.block_until_ready(evaluate.infer(fm, fv, x, T))

        def run() -> None:
            jax.block_until_ready(evaluate.infer(fm, fv, x, T))

        return run


def _temp_mib(compiled: Any) -> float:
    analysis = compiled.memory_analysis()
    temp = getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None
    return float("nan") if temp is None else float(temp) / 2 ** 20


def _load_peers():
    """The package ``benchmarks/peers``, or None when it is absent (``benchmarks/bench.py`` loads it)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from bench import _load_peers as load
    return load()


def spikingjelly_cases(peers: Any, config: Any, input_shape: tuple[int, ...], num_classes: int, batch: int,
                       timesteps: Sequence[int]) -> tuple[dict[int, Callable[[], None]], dict]:
    """SpikingJelly's multi-step BPTT Adam step on the config's CNN layout, per T: ``({T: run once},
    {"version", "note"})``. Raises ``RuntimeError`` with the reason where it cannot run."""
    reason = peers.available().get("spikingjelly")
    if reason is not None:
        raise RuntimeError(reason)
    m = config.model
    if m.name != "cnn" or m.pool not in ("avg", "max"):
        raise RuntimeError(f"the peer column is written for the cnn model only, not {m.name!r}")
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional, layer

    sj = peers.peer_spikingjelly
    torch.manual_seed(0)
    h, w, cin = input_shape
    mods: list = []
    c = cin
    for i, width in enumerate(m.channels):
        mods += [layer.SeqToANNContainer(nn.Conv2d(c, width, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(width, eps=peers.BN_EPS, momentum=peers.BN_MOMENTUM_TORCH)),
                 sj._if_node()]
        if i in m.pool_after:
            pool = nn.AvgPool2d(2, 2) if m.pool == "avg" else nn.MaxPool2d(2, 2)
            mods.append(layer.SeqToANNContainer(pool))
            h, w = h // 2, w // 2
        c = width
    mods.append(layer.SeqToANNContainer(nn.Flatten(), nn.Linear(h * w * c, num_classes)))
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=float(config.train.learning_rate))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, *input_shape[:2], generator=gen)
    y = torch.randint(0, num_classes, (batch,), generator=gen)

    def step(T: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(sj.sj_forward(net, x, T), y).backward()
        opt.step()

    info = {"version": peers.common.version("spikingjelly"),
            "note": f"torch {torch.__version__}, {torch.get_num_threads()} threads, eager; {sj.LAYOUT}; the "
                    f"peers' IF neuron (threshold {peers.THRESHOLD}, v0 {peers.V_INIT}); no compiled memory (no XLA)"}
    return {T: functools.partial(step, T) for T in timesteps}, info


def measure(args: argparse.Namespace) -> dict:
    """Build and time every case; the result as :func:`render` reads it."""
    ours_cfg, bptt_cfg = configs(args.config, args.quick)
    shape, K = input_spec(ours_cfg)
    q = QUICK if args.quick else {}
    Ts = q.get("timesteps", TIMESTEPS)
    batches = q.get("batches", BATCHES)
    batch = q.get("batch", args.batch or int(ours_cfg.train.batch_size))
    infer_batch = q.get("infer_batch", args.infer_batch or int(ours_cfg.eval.batch_size))
    repeats, warmup = q.get("repeats", args.repeats), q.get("warmup", 2)
    # each timed call follows a call of the same case: not the memory a 600 MiB BPTT step left
    settle = 1
    bT = min(BATCH_SWEEP_T, max(Ts))
    cases = Cases(ours_cfg, bptt_cfg, shape, K)

    # 1. training step against T: ours (T=1, once), BPTT at each T, SpikingJelly's where installed
    runs, temp = {}, {}
    runs["ours"], temp["ours"] = cases.train_step("ours", batch, 1)
    for T in Ts:
        runs[f"bptt T={T}"], temp[f"bptt T={T}"] = cases.train_step("bptt", batch, T)
    peers = None if args.no_peers else _load_peers()
    sj: dict = {}
    if peers is None:
        sj["skipped"] = "not measured (--no-peers)" if args.no_peers else "benchmarks/peers is absent"
    else:
        try:
            sj_runs, sj = spikingjelly_cases(peers, bptt_cfg, shape, K, batch, Ts)
            runs.update({f"spikingjelly T={T}": r for T, r in sj_runs.items()})
        except Exception as e:  # an absent or broken peer must not lose our own numbers
            sj = {"skipped": f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)}
    _log(f"timing {len(runs)} training steps against T side by side ({repeats} repeats) ...")
    sec = timing.measure(runs, repeats, warmup, settle)
    ours_ms = 1e3 * sec["ours"]
    train_T: dict[str, Any] = {
        "ours": {"ms": {str(T): ours_ms for T in Ts}, "temp_mib": {str(T): temp["ours"] for T in Ts},
                 "note": "T=1 noisy training: its step does not depend on the deployment T; measured once, "
                         "the same measurement on every row"},
        "bptt": {"ms": {str(T): 1e3 * sec[f"bptt T={T}"] for T in Ts},
                 "temp_mib": {str(T): temp[f"bptt T={T}"] for T in Ts}},
        "spikingjelly": dict(sj, ms={str(T): 1e3 * sec[f"spikingjelly T={T}"] for T in Ts})
        if "skipped" not in sj else sj,
    }

    # 2. the deployed network's inference against T
    inf = {f"T={T}": cases.inference(infer_batch, T) for T in Ts}
    _log(f"timing inference at {len(inf)} T side by side ...")
    inf_ms = {k[2:]: 1e3 * v for k, v in timing.measure(inf, repeats, warmup, settle).items()}

    # 3. training step against batch size: ours (T=1) and BPTT at T=bT
    runs, temp_b = {}, {}
    for B in batches:
        for name, method, T in (("ours", "ours", 1), (f"bptt T={bT}", "bptt", bT)):
            runs[f"{name} B={B}"], temp_b[f"{name} B={B}"] = cases.train_step(method, B, T)
    _log(f"timing {len(runs)} training steps against batch size side by side ...")
    sec = timing.measure(runs, repeats, warmup, settle)
    train_B = {name: {"ms": {str(B): 1e3 * sec[f"{name} B={B}"] for B in batches},
                      "temp_mib": {str(B): temp_b[f"{name} B={B}"] for B in batches}}
               for name in ("ours", f"bptt T={bT}")}

    return {"date": datetime.date.today().isoformat(), "machine": timing.machine(),
            "command": args.command, "config": os.path.relpath(os.path.abspath(args.config), ROOT),
            "model": {"name": ours_cfg.model.name, **({"channels": list(ours_cfg.model.channels),
                                                       "pool_after": list(ours_cfg.model.pool_after)}
                                                      if ours_cfg.model.name == "cnn" else {})},
            "input_shape": list(shape), "num_classes": K, "quick": bool(args.quick),
            "batch": batch, "infer_batch": infer_batch, "repeats": repeats, "warmup": warmup, "settle": settle,
            "timesteps": list(Ts), "batches": list(batches), "batch_sweep_bptt_T": bT,
            "train_vs_T": train_T, "inference_vs_T": {"ms": inf_ms}, "train_vs_batch": train_B,
            **summarize(train_T, inf_ms, train_B, Ts, batches)}


def summarize(train_T: dict, inf_ms: dict, train_B: dict, Ts: Sequence[int], batches: Sequence[int]) -> dict:
    """Least-squares slopes and the ratios BPTT / ours of a measurement."""
    def col(d: dict, keys: Sequence[int]) -> list[float]:
        return [d[str(k)] for k in keys]

    slopes: dict[str, dict] = {"train_ms_per_T": {}, "temp_mib_per_T": {}, "train_ms_per_image": {},
                               "temp_mib_per_image": {}}
    for name, r in train_T.items():
        if "ms" in r:
            slopes["train_ms_per_T"][name] = fit_line(Ts, col(r["ms"], Ts))
        if "temp_mib" in r:
            slopes["temp_mib_per_T"][name] = fit_line(Ts, col(r["temp_mib"], Ts))
    slopes["inference_ms_per_T"] = fit_line(Ts, col(inf_ms, Ts))
    for name, r in train_B.items():
        slopes["train_ms_per_image"][name] = fit_line(batches, col(r["ms"], batches))
        slopes["temp_mib_per_image"][name] = fit_line(batches, col(r["temp_mib"], batches))
    o, b = train_T["ours"], train_T["bptt"]
    return {"slopes": slopes,
            "ratio_bptt_to_ours": {"time": {str(T): b["ms"][str(T)] / o["ms"][str(T)] for T in Ts},
                                   "temp_memory": {str(T): b["temp_mib"][str(T)] / o["temp_mib"][str(T)]
                                                   if o["temp_mib"][str(T)] else float("nan") for T in Ts}}}


def render(r: dict) -> str:
    """The markdown report of a result."""
    Ts, bT = r["timesteps"], r["batch_sweep_bptt_T"]
    tr, sj = r["train_vs_T"], r["train_vs_T"]["spikingjelly"]
    s = r["slopes"]
    shape = "x".join(map(str, r["input_shape"]))
    net = r["model"]["name"] + (f" {tuple(r['model']['channels'])}, pool after {tuple(r['model']['pool_after'])}"
                                if "channels" in r["model"] else "")
    lines = [f"Measured {r['date']} on {r['machine']} by `{r['command']}`"
             + (" (**--quick: tiny sizes, not a measurement**)" if r["quick"] else "") + ".", "",
             f"Network: the {net} of `{r['config']}` on random {shape} images, {r['num_classes']} classes. "
             f"Each table's cases were timed side by side in one process, interleaved round-robin: the median of "
             f"{r['repeats']} repeats after {r['warmup']} warm-up calls, each timed call right after "
             f"{r.get('settle', 0)} untimed call(s) of the same case. Memory is the compiled step's temporary "
             f"buffers (XLA's memory analysis).", "",
             f"## Training step against T (batch {r['batch']})", "",
             "Ours trains at T=1 whatever T the network is deployed at: its training step does not depend on T. "
             "It was measured once and that one measurement stands on every row (flat by construction). "
             "BPTT unrolls T steps (`method=bptt`, `train_step(timesteps=T)`; at T=1 the single-step spiking "
             "network with its surrogate gradient and no noise).", "",
             "| T | ours (ms) | BPTT (ms) | BPTT / ours | SpikingJelly BPTT (ms) | ours temp (MiB) | BPTT temp (MiB) "
             "| BPTT / ours memory |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for T in Ts:
        k = str(T)
        peer = f"{sj['ms'][k]:.1f}" if "ms" in sj else "not installed" if "not installed" in sj["skipped"] else "-"
        lines.append(f"| {T} | {tr['ours']['ms'][k]:.1f} | {tr['bptt']['ms'][k]:.1f} | "
                     f"{r['ratio_bptt_to_ours']['time'][k]:.2f} | {peer} | {tr['ours']['temp_mib'][k]:.1f} | "
                     f"{tr['bptt']['temp_mib'][k]:.1f} | {r['ratio_bptt_to_ours']['temp_memory'][k]:.2f} |")
    if "skipped" in sj:
        lines += ["", f"SpikingJelly: {sj['skipped']}. The peer column needs `make install-peers`."]
    else:
        lines += ["", f"SpikingJelly {sj['version']}: {sj['note']}."]
    lines += ["", f"## Inference of the deployed network against T (batch {r['infer_batch']}, BN folded)", "",
              "| T | ms | ms per image | ratio to T x (T=1) |", "|---:|---:|---:|---:|"]
    inf = r["inference_vs_T"]["ms"]
    for T in Ts:
        v = inf[str(T)]
        lines.append(f"| {T} | {v:.1f} | {v / r['infer_batch']:.3f} | {v / (T * inf[str(Ts[0])]):.2f} |")
    lines += ["", f"## Training step against batch size (ours at T=1, BPTT at T={bT})", "",
              f"| batch | ours (ms) | BPTT T={bT} (ms) | BPTT / ours | ours temp (MiB) | BPTT T={bT} temp (MiB) |",
              "|---:|---:|---:|---:|---:|---:|"]
    o, b = r["train_vs_batch"]["ours"], r["train_vs_batch"][f"bptt T={bT}"]
    for B in r["batches"]:
        k = str(B)
        lines.append(f"| {B} | {o['ms'][k]:.1f} | {b['ms'][k]:.1f} | {b['ms'][k] / o['ms'][k]:.2f} | "
                     f"{o['temp_mib'][k]:.1f} | {b['temp_mib'][k]:.1f} |")

    def fmt(d: dict | None) -> str:
        return "-" if d is None else f"{d['slope']:.3g} (intercept {d['intercept']:.3g})"

    lines += ["", "## Least-squares slopes", "",
              "| quantity | ours | BPTT | SpikingJelly |", "|---|---|---|---|",
              f"| training step ms per time step | {fmt(s['train_ms_per_T']['ours'])} (flat by construction) | "
              f"{fmt(s['train_ms_per_T']['bptt'])} | {fmt(s['train_ms_per_T'].get('spikingjelly'))} |",
              f"| temp MiB per time step | {fmt(s['temp_mib_per_T']['ours'])} (flat by construction) | "
              f"{fmt(s['temp_mib_per_T']['bptt'])} | - |",
              f"| inference ms per time step (deployed network) | {fmt(s['inference_ms_per_T'])} | - | - |",
              f"| training step ms per image (BPTT at T={bT}) | {fmt(s['train_ms_per_image']['ours'])} | "
              f"{fmt(s['train_ms_per_image'][f'bptt T={bT}'])} | - |",
              f"| temp MiB per image (BPTT at T={bT}) | {fmt(s['temp_mib_per_image']['ours'])} | "
              f"{fmt(s['temp_mib_per_image'][f'bptt T={bT}'])} | - |"]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: str) -> bool:
    """Two panels against T: training step time (and the deployed network's inference), and the
    compiled step's temporary memory. Returns False (no file) where matplotlib is absent."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        _log("matplotlib is not installed: no plot")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = r["timesteps"]
    tr = r["train_vs_T"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.plot(Ts, [tr["ours"]["ms"][str(T)] for T in Ts], marker="o", lw=2.5, label="ours: T=1 training step (flat)")
    ax.plot(Ts, [tr["bptt"]["ms"][str(T)] for T in Ts], marker="s", label="BPTT training step")
    if "ms" in tr["spikingjelly"]:
        ax.plot(Ts, [tr["spikingjelly"]["ms"][str(T)] for T in Ts], marker="^", label="SpikingJelly BPTT step")
    ax.plot(Ts, [r["inference_vs_T"]["ms"][str(T)] for T in Ts], marker="x", ls="--",
            label=f"ours: deployed inference (batch {r['infer_batch']})")
    bx.plot(Ts, [tr["ours"]["temp_mib"][str(T)] for T in Ts], marker="o", lw=2.5, label="ours (flat)")
    bx.plot(Ts, [tr["bptt"]["temp_mib"][str(T)] for T in Ts], marker="s", label="BPTT")
    for a, ylabel, title in ((ax, "ms", f"Training step time (batch {r['batch']})"),
                             (bx, "MiB", f"Training step compiled temporary memory (batch {r['batch']})")):
        a.set_xscale("log", base=2)
        a.set_xticks(Ts, [str(T) for T in Ts])
        a.set_ylim(bottom=0)
        a.set_xlabel("time steps T")
        a.set_ylabel(ylabel)
        a.set_title(title)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=120)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="a config file (default: the Fashion-MNIST CNN)")
    p.add_argument("--batch", type=int, default=0, help="training batch of the T sweep (0: the config's)")
    p.add_argument("--infer-batch", type=int, default=0, help="inference batch (0: the config's eval batch)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args(argv)
    args.command = " ".join(["python benchmarks/scaling.py", *argv])
    result = measure(args)
    timing.write_report(args.out, "scaling", result, render(result))
    plot(result, os.path.join(args.out, "scaling.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
