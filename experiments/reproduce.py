"""Reproduce the method's claims (docs/method.md section 5) on mnist5k: ``make reproduce``.

    python experiments/reproduce.py [--workdir runs/reproduce] [--out experiments/results] [--quick]

1. Accuracy against T (1 .. 256) for every method, with the ReLU ANN as the ceiling:
   noisy T=1 training (this library), spike-based BPTT at T=4, classic ANN-to-SNN conversion
   (99.9th-percentile and max threshold balancing, v_init 0 and theta/2), and QCFS (L=4).
2. Time steps each method needs to come within 1 point of the ANN (inference speed).
3. Training cost per epoch: noisy T=1 against BPTT at T=4 and T=8 (wall time measured over a
   real epoch; memory as the compiled train step's temporary buffers).
4. The noise ablation: none (v_init 0 and theta/2), uniform, gaussian with a std sweep, logistic;
   several seeds, mean and spread.

Every method uses the same CNN, data, optimizer and epochs (``experiments/configs/mnist5k.py``).
Writes ``reproduce.json``, ``reproduce.md`` and ``accuracy_vs_t.png``, ``ablation.png`` to
``--out``. Trained workdirs are reused when the script is re-run.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from noisesnn_jax import baselines, convert, evaluate, timing
from noisesnn_jax.data import train_batch
from noisesnn_jax.errors import NoiseSNNError
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.checkpoint import load_run
from noisesnn_jax.run.state import build_model, create_state, make_optimizer
from noisesnn_jax.run.train import train_and_evaluate, train_step

HERE = os.path.dirname(os.path.abspath(__file__))
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BPTT = ["--config.method=bptt", "--config.train.timesteps=4", "--config.noise.kind=none",
        "--config.noise.mean=0.0", "--config.neuron.surrogate=atan"]
ABLATION_T = (1, 2, 4, 8, 16, 32)


def _config(base: str, overrides: list[str]):
    c = config_lib.load_config(base)
    config_lib.apply_overrides(c, overrides)
    return config_lib.validate(c)


def _train(name: str, overrides: list[str], args) -> tuple[str, float]:
    """Train (or reuse) a workdir; returns (workdir, mean seconds per epoch)."""
    workdir = os.path.join(args.workdir, name)
    c = _config(args.config, overrides + args.extra)
    print(f"== {name}: {' '.join(overrides) or 'defaults'}", flush=True)
    train_and_evaluate(c, workdir, progress=False, log=lambda m: print("   " + m, flush=True))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        secs = [json.loads(line)["epoch_seconds"] for line in f]
    # the first epoch includes compilation
    return workdir, statistics.median(secs[1:] if len(secs) > 1 else secs)


def _curve(model, variables, ds, timesteps, bs=500) -> list[float]:
    folded = convert.fold_batchnorm(model, variables, ds.x_test[:1])
    return [evaluate.evaluate(*folded, ds.x_test, ds.y_test, T, batch_size=bs)["accuracy"] for T in timesteps]


def train_step_memory(config, ds, timesteps: int) -> float:
    """MiB of temporary buffers of the compiled train step (XLA's memory analysis)."""
    model = build_model(config, ds.num_classes)
    state = create_state(model, make_optimizer(config, 10), ds.input_shape, jax.random.key(0))
    xb, yb = train_batch(ds, config.train.batch_size, 0, 0)
    step = functools.partial(train_step, num_classes=ds.num_classes, timesteps=timesteps)
    return timing.compiled_temp_mib(step, state, xb, yb, jax.random.key(0))


def interleaved_epoch_cost(args, ds, repeats: int = 7) -> dict:
    """Seconds per training epoch of each method from median step times measured side by side
    (interleaved round-robin after warm-up, one process), times the steps of an epoch."""
    import optax

    cases = {"noisy (ours)": ([], 1), "ANN (ReLU)": (["--config.model.activation=relu"], 1),
             "BPTT T=4": (BPTT, 4), "BPTT T=8": (BPTT, 8)}
    runs, mem = {}, {}
    for name, (ov, T) in cases.items():
        cfg = _config(args.config, ov + args.extra)
        model = build_model(cfg, ds.num_classes)
        state = create_state(model, optax.adam(1e-3), ds.input_shape, jax.random.key(0))
        xb, yb = train_batch(ds, cfg.train.batch_size, 0, 0)
        step = functools.partial(train_step, num_classes=ds.num_classes, timesteps=T)
        mem[name] = timing.compiled_temp_mib(step, state, xb, yb, jax.random.key(0))
        fn = jax.jit(step, donate_argnums=0)
        box = {"s": state}

        def run(fn=fn, box=box, xb=xb, yb=yb):
            box["s"], out = fn(box["s"], xb, yb, jax.random.key(0))
            jax.block_until_ready(out)
        runs[name] = run
    median = timing.measure(runs, repeats)
    cfg = _config(args.config, args.extra)
    spe = ds.num_train // cfg.train.batch_size
    return {"epoch_seconds": {k: v * spe for k, v in median.items()},
            "train_step_temp_mib": mem, "repeats": repeats, "steps_per_epoch": spe}


def steps_to_within(curve: list[float], timesteps, target: float) -> int | None:
    """Smallest T whose accuracy is at least ``target`` (None if never)."""
    for T, a in zip(timesteps, curve):
        if a >= target:
            return T
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(HERE, "configs", "mnist5k.py"))
    p.add_argument("--workdir", default="runs/reproduce")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--seeds", type=int, default=3, help="seeds of the noise ablation")
    p.add_argument("--ablation-epochs", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    p.add_argument("--cost-only", action="store_true",
                   help="re-measure only the training cost and update an existing reproduce.json")
    args, args.extra = p.parse_known_args(argv)
    timesteps = TIMESTEPS
    if args.quick:
        args.extra = ["--config.train.epochs=1"] + args.extra
        args.seeds, args.ablation_epochs, timesteps = 1, 1, (1, 4, 16)
    start = time.perf_counter()
    stem = "reproduce_quick" if args.quick else "reproduce"  # the results' file names
    if args.cost_only:
        from noisesnn_jax.data import load_dataset
        path = os.path.join(args.out, f"{stem}.json")
        with open(path) as f:
            results = json.load(f)
        results["train_cost"] = interleaved_epoch_cost(args, load_dataset("mnist5k"))
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        md = render(results, quick=args.quick)
        with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
            f.write(md)
        print(md)
        return 0
    results: dict = {"date": datetime.date.today().isoformat(), "timesteps": list(timesteps)}
    try:
        # ---- 1. methods
        runs = {
            "noisy (ours)": ["--config.method=noisy"],
            "BPTT T=4": ["--config.method=bptt", "--config.train.timesteps=4", "--config.noise.kind=none",
                         "--config.noise.mean=0.0", "--config.neuron.surrogate=atan"],
            "ANN (ReLU)": ["--config.method=convert"],
            "QCFS L=4": ["--config.method=qcfs", "--config.model.qcfs_levels=4"],
        }
        workdirs, epoch_s = {}, {}
        for name, ov in runs.items():
            workdirs[name], epoch_s[name] = _train(name.split()[0].lower().strip("()"), ov, args)
        curves, extra = {}, {}
        for name in ("noisy (ours)", "BPTT T=4", "QCFS L=4"):
            config, model, variables, ds = load_run(workdirs[name], log=lambda m: None)
            if name.startswith("QCFS"):
                extra["qcfs_ann_accuracy"] = evaluate.evaluate(model, variables, ds.x_test, ds.y_test)["accuracy"]
                model, variables = baselines.ann_to_snn(model, variables, None, 0.5)
            print(f"   evaluating {name} at T = {list(timesteps)}", flush=True)
            curves[name] = _curve(model, variables, ds, timesteps)
        config, ann, ann_vars, ds = load_run(workdirs["ANN (ReLU)"], log=lambda m: None)
        ann_acc = evaluate.evaluate(ann, ann_vars, ds.x_test, ds.y_test)["accuracy"]
        batches = [train_batch(ds, config.train.batch_size, config.seed, i)[0]
                   for i in range(config.convert.num_batches)]
        for pct, label in ((99.9, "99.9%"), (100.0, "max")):
            th = baselines.activation_statistics(ann, ann_vars, batches, pct)
            for v0, vlabel in ((0.0, "0"), (0.5, "theta/2")):
                name = f"conversion {label}, v0={vlabel}"
                print(f"   evaluating {name}", flush=True)
                curves[name] = _curve(*baselines.ann_to_snn(ann, ann_vars, th, v0), ds, timesteps)
        results["ann_accuracy"] = ann_acc
        results["accuracy"] = curves
        results.update(extra)
        target = ann_acc - 0.01
        results["steps_to_within_1pt_of_ann"] = {k: steps_to_within(v, timesteps, target)
                                                 for k, v in curves.items()}

        # ---- 3. training cost
        print("== training cost: BPTT T=8 (one epoch) and step memory", flush=True)
        _, epoch_s["BPTT T=8"] = _train("bptt8", runs["BPTT T=4"][:1] + [
            "--config.train.timesteps=8", "--config.train.epochs=2"] + runs["BPTT T=4"][2:], args)
        base_cfg = _config(args.config, args.extra)
        mem = {"noisy (ours)": train_step_memory(base_cfg, ds, 1)}
        for T in (4, 8):
            cfg = _config(args.config, runs["BPTT T=4"] + args.extra)
            mem[f"BPTT T={T}"] = train_step_memory(cfg, ds, T)
        results["epoch_seconds"] = {k: epoch_s[k] for k in ("noisy (ours)", "BPTT T=4", "BPTT T=8", "ANN (ReLU)")}
        results["train_step_temp_mib"] = mem
        print("== training cost, interleaved step timing", flush=True)
        results["train_cost"] = interleaved_epoch_cost(args, ds, 3 if args.quick else 7)

        # ---- 4. noise ablation
        ablation = {
            "none, v0=0": ["--config.noise.kind=none", "--config.noise.mean=0.0"],
            "none, v0=theta/2": ["--config.noise.kind=none", "--config.noise.mean=0.5"],
            "uniform": ["--config.noise.kind=uniform"],
            "gaussian std=0.15": ["--config.noise.kind=gaussian", "--config.noise.std=0.15"],
            "gaussian std=0.29": ["--config.noise.kind=gaussian"],
            "gaussian std=0.5": ["--config.noise.kind=gaussian", "--config.noise.std=0.5"],
            "logistic": ["--config.noise.kind=logistic"],
        }
        abl: dict = {}
        for name, ov in ablation.items():
            per_seed = []
            for seed in range(args.seeds):
                tag = name.replace(" ", "").replace(",", "_").replace("=", "").replace("/", "")
                wd, _ = _train(f"ablation/{tag}/seed{seed}", ov + [
                    f"--config.seed={seed}", f"--config.train.epochs={args.ablation_epochs}"], args)
                _, model, variables, ds = load_run(wd, log=lambda m: None)
                per_seed.append(_curve(model, variables, ds, ABLATION_T if not args.quick else timesteps))
            arr = np.array(per_seed)
            abl[name] = {"mean": arr.mean(0).tolist(), "min": arr.min(0).tolist(), "max": arr.max(0).tolist(),
                         "per_seed": per_seed}
        results["ablation"] = {"timesteps": list(ABLATION_T if not args.quick else timesteps),
                               "epochs": args.ablation_epochs, "seeds": args.seeds, "runs": abl}
    except NoiseSNNError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 2
    results["seconds"] = round(time.perf_counter() - start)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = render(results, quick=args.quick)
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(md)
    plot(results, args.out, "_quick" if args.quick else "")
    print(md)
    return 0


def render(r: dict, quick: bool = False) -> str:
    """Markdown tables of the results."""
    T = r["timesteps"]
    cmd = "python experiments/reproduce.py --quick" if quick else "make reproduce"
    out = [f"Measured {r['date']} by `{cmd}` ({r['seconds']} s in all), mnist5k (1,000 test images).", "",
           f"Accuracy (%) against T; ReLU ANN ceiling {100 * r['ann_accuracy']:.2f}%.", "",
           "| method | " + " | ".join(f"T={t}" for t in T) + " | T to within 1 pt of ANN |",
           "|---|" + "---:|" * (len(T) + 1)]
    for name, curve in r["accuracy"].items():
        k = r["steps_to_within_1pt_of_ann"][name]
        out.append(f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in curve) + f" | {k or '> ' + str(T[-1])} |")
    out += ["", "Training cost per epoch (same CNN, data and batch):", ""]
    c = r.get("train_cost")
    if c:
        out += [f"Step times measured side by side (interleaved, median of {c['repeats']}) times "
                f"{c['steps_per_epoch']} steps; wall time of the actual training epochs (median over "
                f"epochs after the first, runs at different times) for reference.", "",
                "| method | seconds per epoch | ratio to noisy T=1 | actual epoch wall time (s) "
                "| train-step temp memory (MiB) |", "|---|---:|---:|---:|---:|"]
        base = c["epoch_seconds"]["noisy (ours)"]
        for name, s in c["epoch_seconds"].items():
            wall = r.get("epoch_seconds", {}).get(name)
            out.append(f"| {name} | {s:.1f} | {s / base:.2f} | {'' if wall is None else f'{wall:.1f}'} | "
                       f"{c['train_step_temp_mib'][name]:.1f} |")
    a = r["ablation"]
    out += ["", f"Noise ablation: {a['epochs']} epochs, {a['seeds']} seeds, mean accuracy (%) with "
            f"[min, max] over seeds.", "",
            "| noise | " + " | ".join(f"T={t}" for t in a["timesteps"]) + " |", "|---|" + "---:|" * len(a["timesteps"])]
    for name, v in a["runs"].items():
        cells = [f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" for m, lo, hi in zip(v["mean"], v["min"], v["max"])]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(r: dict, out: str, suffix: str = "") -> None:
    """accuracy_vs_t.png (every method) and ablation.png (mean with min-max band)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in r["accuracy"].items():
        ax.plot(r["timesteps"], [100 * a for a in curve], marker="o", ms=3, label=name,
                lw=2.5 if "ours" in name else 1.2)
    ax.axhline(100 * r["ann_accuracy"], ls="--", color="gray", label="ReLU ANN")
    ax.set_xscale("log", base=2)
    ax.set_ylim(max(0, 100 * r["ann_accuracy"] - 30), 100)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("mnist5k: accuracy against T, every method")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"accuracy_vs_t{suffix}.png"), dpi=120)
    plt.close(fig)
    a = r["ablation"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in a["runs"].items():
        ax.plot(a["timesteps"], [100 * m for m in v["mean"]], marker="o", ms=3, label=name)
        ax.fill_between(a["timesteps"], [100 * m for m in v["min"]], [100 * m for m in v["max"]], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T (converted network)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"noise ablation ({a['seeds']} seeds, min-max band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"ablation{suffix}.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
