"""The method's claims on full Fashion-MNIST: ``make reproduce-fashion-mnist``.

    python experiments/fashion_mnist.py [--workdir runs/fashion_mnist] [--out experiments/results]
                                        [--seeds 3] [--only noisy,ann] [--config.x=y ...]

Every method trains the CNN of ``experiments/configs/fashion_mnist.py`` on the 60,000 training
images and is tested on the 10,000 test images:

- ours: noisy T=1 training (seeds 0..seeds-1), converted to T = 1 .. 64;
- the ReLU ANN (same seeds), and from each ANN the classic ANN-to-SNN conversion (99.9th
  percentile and max threshold balancing, v_init 0 and theta/2);
- QCFS (L=4) and spike-based BPTT at T=4 (seed 0).

Runs go in priority order (seed 0 of every method first) and each finished run leaves a
``result.json`` in its workdir: re-running the command skips finished runs and resumes an
interrupted one from its last checkpoint (training checkpoints every 100 steps), so the table
fills in over several sittings. After every run the tables are rewritten from all finished runs:
``fashion_mnist.{json,md,png}`` in ``--out``. Accuracy curves come from one run at the longest T
(:func:`noisesnn_jax.evaluate.accuracy_curve`).

``--jobs N`` splits the runs over N processes (XLA keeps about 1.4 of 2 CPU cores busy with this
small CNN, so two processes finish sooner). Epoch wall times then overlap with other runs; the
training-cost comparison is measured separately at the end, in one process, by timing the steps of
each method side by side (interleaved, median of 7), and cached in ``cost.json``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys

import jax
import numpy as np

from noisesnn_jax import baselines, convert, evaluate
from noisesnn_jax import config as config_lib
from noisesnn_jax.checkpoint import load_run
from noisesnn_jax.data import dataset_from_config
from noisesnn_jax.errors import NoiseSNNError
from noisesnn_jax.train import TrainingInterrupted, train_and_evaluate
from reproduce import interleaved_epoch_cost, train_step_memory

HERE = os.path.dirname(os.path.abspath(__file__))
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
METHODS = {
    "noisy": ("noisy (ours)", ["--config.method=noisy"]),
    "ann": ("ANN (ReLU)", ["--config.method=convert"]),
    "qcfs": ("QCFS L=4", ["--config.method=qcfs", "--config.model.qcfs_levels=4"]),
    "bptt4": ("BPTT T=4", ["--config.method=bptt", "--config.train.timesteps=4", "--config.noise.kind=none",
                           "--config.noise.mean=0.0", "--config.neuron.surrogate=atan"]),
}
CONVERSIONS = ((99.9, "99.9%"), (100.0, "max"))


def plan(seeds: int, only: list[str]) -> list[tuple[str, int]]:
    """(method, seed) in the order they run: seed 0 of every method, then the other seeds of
    ours and the ANN."""
    first = [(m, 0) for m in METHODS]
    rest = [(m, s) for s in range(1, seeds) for m in ("noisy", "ann")]
    return [(m, s) for m, s in first + rest if not only or m in only]


def run_one(method: str, seed: int, args) -> dict:
    """Train (or resume) one run, evaluate it, and cache the result in its workdir."""
    workdir = os.path.join(args.workdir, method, f"seed{seed}")
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    label, overrides = METHODS[method]
    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, overrides + [f"--config.seed={seed}"] + args.extra)
    config_lib.validate(config)
    print(f"== {label}, seed {seed}: {workdir}", flush=True)
    train_and_evaluate(config, workdir, progress=False, log=lambda m: print("   " + m, flush=True))
    config, model, variables, ds = load_run(workdir, log=lambda m: None)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f]
    result = {"method": method, "label": label, "seed": seed, "epochs": len(epochs),
              "epoch_seconds": statistics.median([e["epoch_seconds"] for e in epochs[1:]] or
                                                 [epochs[0]["epoch_seconds"]]),
              "train_step_temp_mib": train_step_memory(config, ds, config.train.timesteps if method == "bptt4" else 1),
              "curves": {}}
    curve = functools.partial(_curve, ds=ds, timesteps=args.timesteps)
    if method == "ann":
        result["ann_accuracy"] = evaluate.evaluate_dataset(model, variables, ds)["accuracy"]
        batches = [ds.train_batch(config.train.batch_size, seed, i)[0] for i in range(config.convert.num_batches)]
        for pct, name in CONVERSIONS:
            th = baselines.activation_statistics(model, variables, batches, pct)
            for v0, vname in ((0.0, "0"), (0.5, "theta/2")):
                print(f"   evaluating conversion {name}, v0={vname}", flush=True)
                result["curves"][f"conversion {name}, v0={vname}"] = curve(*baselines.ann_to_snn(model, variables, th, v0))
    elif method == "qcfs":
        result["ann_accuracy"] = evaluate.evaluate_dataset(model, variables, ds)["accuracy"]
        result["curves"][label] = curve(*baselines.ann_to_snn(model, variables, None, 0.5))
    else:
        result["t1_accuracy"] = evaluate.evaluate_dataset(model, variables, ds)["accuracy"]
        if method == "noisy":
            result["t1_sampled_accuracy"] = evaluate.evaluate_dataset(
                model, variables, ds, sample_noise_key=jax.random.key(seed + 1))["accuracy"]
        print(f"   evaluating at T = {list(args.timesteps)}", flush=True)
        result["curves"][label] = curve(model, variables)
    _dump(result, done)
    return result


def _curve(model, variables, ds, timesteps) -> list[float]:
    folded = convert.fold_batchnorm(model, variables, ds.test_examples(np.arange(1))[0])
    return evaluate.accuracy_curve(*folded, ds, timesteps)


def finished_results(args, todo) -> list[dict]:
    """The cached results of the planned runs that have finished (by any process)."""
    out = []
    for method, seed in todo:
        path = os.path.join(args.workdir, method, f"seed{seed}", "result.json")
        if os.path.exists(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def training_cost(args) -> dict:
    """Seconds per epoch of ours, the ANN and BPTT at T=4 and 8 from step times measured side by
    side in this process (:func:`reproduce.interleaved_epoch_cost`), cached in ``cost.json``."""
    path = os.path.join(args.workdir, "cost.json")
    if not os.path.exists(path):
        print("== training cost: step times side by side", flush=True)
        ds = dataset_from_config(config_lib.load_config(args.config))
        cost = interleaved_epoch_cost(args, ds)
        _dump(cost, path)
    with open(path) as f:
        return json.load(f)


def _dump(obj, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def summarize(results: list[dict], timesteps) -> dict:
    """Mean, min and max over seeds of every curve and scalar, by curve name."""
    curves: dict[str, list] = {}
    scalars: dict[str, dict[str, list]] = {}
    for r in results:
        for name, c in r["curves"].items():
            curves.setdefault(name, []).append(c)
        for k in ("t1_accuracy", "t1_sampled_accuracy", "ann_accuracy", "epoch_seconds", "train_step_temp_mib"):
            if k in r:
                scalars.setdefault(r["label"], {}).setdefault(k, []).append(r[k])
    stat = lambda a: {"mean": np.mean(a, 0).tolist(), "min": np.min(a, 0).tolist(),  # noqa: E731
                      "max": np.max(a, 0).tolist(), "seeds": len(a)}
    return {"timesteps": list(timesteps),
            "curves": {k: stat(np.asarray(v)) for k, v in curves.items()},
            "scalars": {k: {n: stat(np.asarray(v)) for n, v in d.items()} for k, d in scalars.items()}}


def render(summary: dict, planned: int, finished: int, cost: dict | None = None) -> str:
    """Markdown tables of a summary."""
    T = summary["timesteps"]
    sc = summary["scalars"]
    pct = lambda s, i=None: (f"{100 * (s['mean'] if i is None else s['mean'][i]):.2f}" + (  # noqa: E731
        "" if s["seeds"] == 1 else f" [{100 * (s['min'] if i is None else s['min'][i]):.2f}, "
                                   f"{100 * (s['max'] if i is None else s['max'][i]):.2f}]"))
    out = [f"Full Fashion-MNIST (60,000 train / 10,000 test), `make reproduce-fashion-mnist`, "
           f"{finished} of {planned} planned runs finished. Test accuracy (%), mean [min, max] over seeds.", ""]
    ann = sc.get("ANN (ReLU)", {}).get("ann_accuracy")
    if ann:
        out += [f"ReLU ANN (the same CNN): {pct(ann)} ({ann['seeds']} seeds).", ""]
    out += ["| method | seeds | T=1 deterministic | " + " | ".join(f"T={t}" for t in T) + " |",
            "|---|---:|---:|" + "---:|" * len(T)]
    for name, c in summary["curves"].items():
        s = sc.get(name, {})  # a method's own curve carries its label; conversions have no scalars
        t1 = pct(s["t1_accuracy"]) if "t1_accuracy" in s else (
            f"ANN {pct(s['ann_accuracy'])}" if "ann_accuracy" in s and not name.startswith("conversion") else "")
        out.append(f"| {name} | {c['seeds']} | {t1} | " + " | ".join(pct(c, i) for i in range(len(T))) + " |")
    noisy = sc.get("noisy (ours)", {})
    if "t1_sampled_accuracy" in noisy:
        out += ["", f"Ours at T=1 with the noise sampled (not at its mean): {pct(noisy['t1_sampled_accuracy'])}."]
    out += ["", "Training cost (same CNN, batch and epochs; wall time per epoch, median over epochs after "
            "the first, runs at different times on a shared machine; XLA's temporary buffers of the "
            "compiled train step):", "",
            "| method | seconds per epoch | train-step temp memory (MiB) |", "|---|---:|---:|"]
    for label, s in sc.items():
        out.append(f"| {label} | {s['epoch_seconds']['mean']:.1f} | {s['train_step_temp_mib']['mean']:.1f} |")
    if cost:
        base = cost["epoch_seconds"]["noisy (ours)"]
        out += ["", f"Training cost measured side by side in one process: median of {cost['repeats']} interleaved "
                f"step times x {cost['steps_per_epoch']} steps per epoch.", "",
                "| method | seconds per epoch | ratio to ours | train-step temp memory (MiB) |", "|---|---:|---:|---:|"]
        for label, sec in cost["epoch_seconds"].items():
            out.append(f"| {label} | {sec:.1f} | {sec / base:.2f} | {cost['train_step_temp_mib'][label]:.1f} |")
    return "\n".join(out) + "\n"


def plot(summary: dict, path: str) -> None:
    """Accuracy against T with the seed range as a band; the ANN as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    T = summary["timesteps"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in summary["curves"].items():
        ax.plot(T, [100 * a for a in c["mean"]], marker="o", ms=3, label=name, lw=2.5 if "ours" in name else 1.2)
        if c["seeds"] > 1:
            ax.fill_between(T, [100 * a for a in c["min"]], [100 * a for a in c["max"]], alpha=0.15)
    ann = summary["scalars"].get("ANN (ReLU)", {}).get("ann_accuracy")
    if ann:
        ax.axhline(100 * ann["mean"], ls="--", color="gray", label="ReLU ANN")
    ax.set_xscale("log", base=2)
    ax.set_ylim(70, 96)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST: accuracy against T")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(args, todo, cost: dict | None = None) -> None:
    """Rewrite ``fashion_mnist.{json,md,png}`` from the finished runs."""
    results = finished_results(args, todo)
    if not results:
        return
    planned = len(todo)
    summary = summarize(results, args.timesteps)
    summary["train_cost"] = cost
    summary.update({"date": datetime.date.today().isoformat(), "runs": results, "planned_runs": planned,
                    "config": os.path.relpath(args.config, os.path.dirname(HERE)), "overrides": args.extra,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "jax": jax.__version__, "backend": jax.default_backend()}})
    os.makedirs(args.out, exist_ok=True)
    _dump(summary, os.path.join(args.out, "fashion_mnist.json"))
    md = render(summary, planned, len(results), cost)
    with open(os.path.join(args.out, "fashion_mnist.md.tmp"), "w") as f:
        f.write(md)
    os.replace(os.path.join(args.out, "fashion_mnist.md.tmp"), os.path.join(args.out, "fashion_mnist.md"))
    plot(summary, os.path.join(args.out, "fashion_mnist.png"))
    print(md, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(HERE, "configs", "fashion_mnist.py"))
    p.add_argument("--workdir", default="runs/fashion_mnist")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--seeds", type=int, default=3, help="seeds of ours and of the ANN")
    p.add_argument("--only", default="", help=f"comma-separated methods to run, of {list(METHODS)}")
    p.add_argument("--timesteps", default=",".join(map(str, TIMESTEPS)))
    p.add_argument("--jobs", type=int, default=1, help="processes that share the runs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of the --jobs processes
    args, args.extra = p.parse_known_args(argv)
    args.timesteps = tuple(int(t) for t in args.timesteps.split(","))
    only = [m for m in args.only.split(",") if m]
    unknown = sorted(set(only) - set(METHODS))
    if unknown:
        print(f"fashion_mnist: error: --only {unknown} unknown; choose from {list(METHODS)}", file=sys.stderr)
        return 2
    todo = plan(args.seeds, only)
    if args.jobs > 1:
        return run_jobs(argv if argv is not None else sys.argv[1:], args, todo)
    try:
        for method, seed in todo:
            if claim(os.path.join(args.workdir, method, f"seed{seed}")):
                run_one(method, seed, args)
                write(args, todo)
        if not args.worker:
            write(args, todo, training_cost(args))
    except TrainingInterrupted as e:
        print(f"fashion_mnist: {e}; finished runs are kept, re-run the command to continue", file=sys.stderr)
        return 143
    except NoiseSNNError as e:
        print(f"fashion_mnist: error: {e}", file=sys.stderr)
        return 2
    return 0


def claim(workdir: str) -> bool:
    """Take a run for this process: False if it is finished or another live process holds it.
    The claim is a file with the holder's pid; a dead holder's claim (a cut session) is taken over."""
    if os.path.exists(os.path.join(workdir, "result.json")):
        return True  # nothing to train: run_one reads the cached result
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "claim.pid")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    holder = int(f.read().strip() or 0)
                os.kill(holder, 0)
                return holder == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                try:
                    os.remove(path)  # a dead holder's claim
                except FileNotFoundError:
                    pass
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_jobs(argv: list[str], args, todo) -> int:
    """Run the plan in ``args.jobs`` worker processes (each takes the next unclaimed run), then
    measure the training cost and write the tables. SIGTERM and SIGINT are passed on to the
    workers, which checkpoint and stop."""
    import signal
    import subprocess
    argv = [a for i, a in enumerate(argv) if not (a.startswith("--jobs") or (i and argv[i - 1] == "--jobs"))]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv, "--worker"])
             for _ in range(args.jobs)]
    forward = lambda signum, frame: [p.send_signal(signum) for p in procs if p.poll() is None]  # noqa: E731
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"fashion_mnist: a job ended with {max(codes)}; re-run the command to continue", file=sys.stderr)
        return max(codes)
    try:
        write(args, todo, training_cost(args))
    except NoiseSNNError as e:
        print(f"fashion_mnist: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
