"""Speed benchmarks: cost of the noise, cost of time, BPTT, and peer libraries (``make bench``).

    python benchmarks/bench.py [--batch 64] [--repeats 15] [--out benchmarks/results]

All cases run side by side in one process, interleaved round-robin over ``--repeats`` rounds
after warm-up, and each is reported as the median; ratios are taken between medians of the same
run. The network is the demo CNN (``noisesnn_jax.models.CNN`` defaults, 28x28x1 input). Writes
``results.json`` and ``results.md`` (with the machine and the command).
"""

from __future__ import annotations

import os

# PyTorch peers on a small shared CPU: busy-waiting OpenMP threads slow eager element-wise ops by
# an order of magnitude; passive waiting is the fair setting (set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime
import functools
import importlib.util
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import convert, evaluate, pieces, timing
from noisesnn_jax.models import CNN, resnet18
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.run.state import TrainState, create_state
from noisesnn_jax.run.train import train_step
from noisesnn_jax.spikes import Noise

HERE = os.path.dirname(os.path.abspath(__file__))


def _train_case(model: CNN, batch: int, timesteps: int = 1) -> tuple[Callable[[], None], int]:
    """A jitted train step on fixed data; returns (run once, temp bytes of the compiled step)."""
    import optax

    state = create_state(model, optax.adam(1e-3), (28, 28, 1), jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 28, 28, 1)), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)
    key = jax.random.key(1)
    fn = jax.jit(functools.partial(train_step, num_classes=10, timesteps=timesteps), donate_argnums=0)
    mem = fn.lower(state, x, y, key).compile().memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else 0
    box: dict[str, TrainState] = {"s": state}

    def run() -> None:
        box["s"], m = fn(box["s"], x, y, key)
        jax.block_until_ready(m)

    return run, temp


def _infer_case(model, batch: int, timesteps: int, shape: tuple[int, ...] = (28, 28, 1),
                microbatch: int | None = None) -> Callable[[], None]:
    """The library's inference (``evaluate.infer``: BN folded, jitted, cache-sized pieces of the
    batch on a CPU unless ``microbatch`` says otherwise) on fixed random images."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch,) + shape), jnp.float32)
    v = model.init({"params": jax.random.key(0)}, x[:1])
    fm, fv = convert.fold_batchnorm(model, v, x[:1])

    def run() -> None:
        jax.block_until_ready(evaluate.infer(fm, fv, x, timesteps, microbatch=microbatch))

    return run


def _load_peers():
    """The package ``benchmarks/peers`` (the peer libraries' networks), or None when it is absent."""
    folder = os.path.join(HERE, "peers")
    if not os.path.exists(os.path.join(folder, "__init__.py")):
        return None
    spec = importlib.util.spec_from_file_location("noisesnn_peers", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its modules import each other relatively
    spec.loader.exec_module(mod)
    return mod


def _default_row(r: dict) -> str:
    """The training-step row of the library's default noise (``Noise()``, as the result recorded it)."""
    kind, sampler = r.get("default_noise", ("gaussian", "hash"))
    return f"T=1 {kind}, {sampler}"


def _steps(case: str) -> int:
    """``T`` of an inference case's name (``"T=8"``, ``"T=8, batch whole"``)."""
    return int(case.split(",")[0].split("=")[1])


def _resnet18_table(peers_mod, batch: int, repeats: int) -> dict:
    """ResNet-18 (cifar stem, 32x32x3, 10 classes) inference at T=4 and 8: ours, and SpikingJelly's
    where installed, interleaved in one measurement."""
    print("measuring ResNet-18 inference ...", file=sys.stderr)
    model = resnet18(num_classes=10)
    cases = {f"noisesnn-jax T={T}": _infer_case(model, batch, T, (32, 32, 3)) for T in (4, 8)}
    out: dict = {"repeats": repeats}
    reason = None if peers_mod is None else peers_mod.available().get("spikingjelly")
    if peers_mod is None:
        reason = "benchmarks/peers not loaded (--no-peers)"
    if reason is None:
        runs, info = peers_mod.resnet18_runners("spikingjelly", batch, (4, 8))
        cases.update({f"spikingjelly T={T}": run for T, run in runs.items()})
        out["spikingjelly"] = info
    else:
        out["spikingjelly"] = {"skipped": reason}
    out["ms"] = {k: 1e3 * v for k, v in timing.measure(cases, repeats, warmup=1).items()}
    return out


def _conv_bound(peers_mod, rows: int, repeats: int) -> dict:
    """The ReLU CNN's training step at ``rows = T x B`` images: ours (XLA) and plain PyTorch (oneDNN)."""
    print(f"measuring the ReLU step at batch {rows} ...", file=sys.stderr)
    cases = {"noisesnn-jax (XLA)": _train_case(CNN(activation="relu"), rows)[0]}
    out: dict = {"rows": rows, "repeats": repeats}
    reason = "benchmarks/peers not loaded (--no-peers)" if peers_mod is None else \
        peers_mod.available().get("spikingjelly")  # the torch peers' install
    if reason is None:
        cases["pytorch (oneDNN)"], out["note"] = peers_mod.torch_relu_runner(rows)
    else:
        out["skipped"] = reason
    out["ms"] = {k: 1e3 * v for k, v in timing.measure(cases, repeats).items()}
    return out


def _train_steps(B: int, repeats: int) -> tuple[dict, dict]:
    """1. The cost of the noise: T=1 noisy steps vs the same model's ReLU ANN step, and BPTT:
    ``(median seconds, compiled temp bytes)`` per case."""
    print("measuring training steps ...", file=sys.stderr)
    gauss = {s: CNN(noise=Noise("gaussian", sampler=s)) for s in ("reparam", "uniform16", "hash")}
    bptt = CNN(noise=Noise("none", mean=0.5), neuron=Neuron(surrogate="atan"))
    train_cases, temps = {}, {}
    cheap = {k: CNN(noise=Noise(k, sampler="hash")) for k in ("uniform", "triangular", "logistic")}
    for name, model in [("relu ANN", CNN(activation="relu")), ("T=1 no noise", CNN(noise=Noise("none"))),
                        *[(f"T=1 gaussian, {s}", m) for s, m in gauss.items()],
                        *[(f"T=1 {k}, hash", m) for k, m in cheap.items()]]:
        train_cases[name], temps[name] = _train_case(model, B)
    for T in (4, 8):
        train_cases[f"BPTT T={T}"], temps[f"BPTT T={T}"] = _train_case(bptt, B, T)
        train_cases[f"BPTT T={T}, remat"], temps[f"BPTT T={T}, remat"] = _train_case(
            bptt.clone(remat=True), B, T)
    return timing.measure(train_cases, repeats), temps


def _inference(B: int, repeats: int) -> tuple[dict, dict]:
    """2. The cost of time: T=N inference vs N x the T=1 forward; the batch whole vs in pieces:
    ``(median seconds per case, images per piece per T)``."""
    print("measuring inference ...", file=sys.stderr)
    snn = CNN()
    cases = {f"T={T}": _infer_case(snn, B, T) for T in (1, 4, 8, 16)}
    cases.update({f"T={T}, batch whole": _infer_case(snn, B, T, microbatch=B) for T in (4, 8)})
    infer = timing.measure(cases, repeats)
    x1 = np.zeros((B, 28, 28, 1), np.float32)
    sizes = {T: pieces.microbatch_size(snn, snn.init({"params": jax.random.key(0)}, x1[:1]), x1, T)
             for T in (1, 4, 8, 16)}
    return infer, sizes


def _peer_steps(mod, B: int, repeats: int) -> dict:
    """3. Every installed peer's CNN inference and BPTT step (a skipped peer says why)."""
    peers = {}
    if mod is None:
        return peers
    for name, reason in mod.available().items():
        if reason is not None:
            peers[name] = {"skipped": reason}
            print(f"peer {name} skipped: {reason}", file=sys.stderr)
            continue
        print(f"measuring peer {name} ...", file=sys.stderr)
        try:
            peers[name] = mod.bench_peer(name, B, (4, 8), 4, repeats=repeats)
        except Exception as e:  # a peer's failure must not lose our own numbers
            peers[name] = {"skipped": f"{type(e).__name__}: {e}"}
    return peers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args(argv)
    B = args.batch
    train, temps = _train_steps(B, args.repeats)
    infer, sizes = _inference(B, args.repeats)
    mod = None if args.no_peers else _load_peers()
    peers = _peer_steps(mod, B, max(5, args.repeats // 2))
    # 4. ResNet-18 (32x32x3) inference, ours and SpikingJelly's timed side by side
    resnet = _resnet18_table(mod, B, max(3, args.repeats // 5))
    # 5. what bounds the BPTT step: the same CNN's ReLU step at batch T*B, in JAX and in PyTorch
    convs = _conv_bound(mod, B * 4, max(5, args.repeats // 2))

    base = train["relu ANN"]
    result = {
        "date": datetime.date.today().isoformat(), "machine": timing.machine(), "batch": B,
        "repeats": args.repeats, "command": "make bench",
        "train_step_ms": {k: 1e3 * v for k, v in train.items()},
        "train_ratio_to_ann": {k: v / base for k, v in train.items()},
        "train_temp_mib": {k: v / 2 ** 20 for k, v in temps.items()},
        "inference_ms": {k: 1e3 * v for k, v in infer.items()},
        "inference_ratio_to_n_t1": {k: infer[k] / (_steps(k) * infer["T=1"]) for k in infer},
        "inference_piece": {f"T={T}": n for T, n in sizes.items()},
        "cache_bytes": pieces.cache_bytes(),
        "default_noise": (Noise().kind, Noise().sampler),
        "peers": peers,
        "resnet18": resnet,
        "conv_bound": convs,
    }
    timing.write_report(args.out, "results", result, render(result))
    return 0


def render(r: dict) -> str:
    """The markdown tables of a result."""
    lines = [f"Measured {r['date']} on {r['machine']} by `{r['command']}`: batch {r['batch']}, "
             f"median of {r['repeats']} interleaved repeats after warm-up.", "",
             "| training step (demo CNN, 28x28) | ms | ratio to ReLU ANN step | compiled temp memory (MiB) |",
             "|---|---:|---:|---:|"]
    for k, v in r["train_step_ms"].items():
        lines.append(f"| {k} | {v:.1f} | {r['train_ratio_to_ann'][k]:.2f} | {r['train_temp_mib'][k]:.1f} |")
    lines += ["", "| inference (BN folded) | ms | ratio to T x (T=1 forward) | images per piece |",
              "|---|---:|---:|---:|"]
    for k, v in r["inference_ms"].items():
        piece = r["batch"] if "whole" in k else r.get("inference_piece", {}).get(k, "")
        lines.append(f"| {k} | {v:.1f} | {r['inference_ratio_to_n_t1'][k]:.2f} | {piece} |")
    if "cache_bytes" in r:
        lines += ["", f"Inference runs the batch in pieces whose largest activation fits the cores' L2 cache "
                      f"({r['cache_bytes'] / 2 ** 20:.0f} MiB here; `pieces.microbatch_size`); "
                      f"\"batch whole\" rows run all {r['batch']} images at once."]
    if r["peers"]:
        ours = {"inference_s": {T: r["inference_ms"].get(f"T={T}", float("nan")) / 1e3 for T in (4, 8)},
                "train_step_s": r["train_step_ms"]["BPTT T=4"] / 1e3}
        lines += ["", "| library | inference T=4 (ms) | inference T=8 (ms) | BPTT step T=4 (ms) | note |",
                  "|---|---:|---:|---:|---|",
                  f"| noisesnn-jax | {1e3 * ours['inference_s'][4]:.1f} | {1e3 * ours['inference_s'][8]:.1f} | "
                  f"{1e3 * ours['train_step_s']:.1f} | jit, first layer once, cache-sized pieces of the batch; "
                  f"T=1 noisy step: "
                  f"{r['train_step_ms'][_default_row(r)]:.1f} ms ({_default_row(r)[4:]}, the default) |"]
        for name, p in r["peers"].items():
            if "skipped" in p:
                lines.append(f"| {name} | - | - | - | skipped: {p['skipped']} |")
                continue
            inf = {int(k): v for k, v in p["inference_s"].items()}
            lines.append(f"| {name} {p.get('version', '')} | {1e3 * inf.get(4, float('nan')):.1f} | "
                         f"{1e3 * inf.get(8, float('nan')):.1f} | {1e3 * p['train_step_s']:.1f} | {p.get('note', '')} |")
    rn = r.get("resnet18")
    if rn:
        ms = rn["ms"]
        sj = rn.get("spikingjelly", {})
        lines += ["", f"| ResNet-18 (32x32x3) inference, batch {r['batch']} | T=4 (ms) | T=8 (ms) | note |",
                  "|---|---:|---:|---|",
                  f"| noisesnn-jax | {ms['noisesnn-jax T=4']:.0f} | {ms['noisesnn-jax T=8']:.0f} | "
                  f"median of {rn['repeats']} interleaved repeats |"]
        if "skipped" in sj:
            lines.append(f"| spikingjelly | - | - | skipped: {sj['skipped']} |")
        else:
            lines.append(f"| spikingjelly {sj['version']} | {ms['spikingjelly T=4']:.0f} | {ms['spikingjelly T=8']:.0f} | "
                         f"{sj['note']} |")
            lines.append(f"| ratio spikingjelly / noisesnn-jax | {ms['spikingjelly T=4'] / ms['noisesnn-jax T=4']:.2f} | "
                         f"{ms['spikingjelly T=8'] / ms['noisesnn-jax T=8']:.2f} | |")
    cb = r.get("conv_bound")
    if cb:
        lines += ["", f"| ReLU CNN training step at batch {cb['rows']} (= T x B of BPTT T=4) | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in cb["ms"].items()]
        if "skipped" in cb:
            lines.append(f"| pytorch | skipped: {cb['skipped']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
