"""The method's claims on full Fashion-MNIST: ``make reproduce-fashion-mnist``.

    python experiments/fashion_mnist.py [--workdir runs/fashion_mnist] [--out experiments/results]
                                        [--seeds 3] [--only noisy,ann] [--no-budget] [--tables-only]
                                        [--config.x=y ...]

Every method trains the CNN of ``experiments/configs/fashion_mnist.py`` (chosen on the validation
split by ``experiments/fashion_mnist_tune.py``) on the 60,000 training images and is tested on the
10,000 test images, seeds 0..seeds-1:

- ours: noisy T=1 training, converted to T = 1 .. 64;
- the ReLU ANN, and from it the classic ANN-to-SNN conversion (99.9th percentile and max
  threshold balancing, v_init 0 and theta/2);
- clip-trained conversion (TCL): the ANN with its activation clipped at the threshold, run as
  the spiking network with v_init = theta/2;
- QCFS (L=4) with the official recipe's essentials (one lam per layer from 8, SGD with weight
  decay), the variant that won on the validation split;
- spike-based BPTT at T=4;
- ours followed by one epoch of BPTT at T=4 from the same seed's run (the fine-tune chosen on the
  validation split); its training time counts both.

Equal cost: besides the full-length runs, each method trains (seed 0) for fewer or more epochs
(``BUDGET_EPOCHS``), so that accuracy at T=4 and T=8 can be read against training wall time. That
time is each run's epochs times the method's epoch cost measured side by side in one process
(interleaved step times, median of 7; ``cost.json``), not the runs' own wall times, which overlap
with each other on a shared machine.

Runs go in priority order (seed 0 of every method first) and each finished run leaves a
``result.json`` in its workdir: re-running the command skips finished runs and resumes an
interrupted one from its last checkpoint (training checkpoints every 100 steps), so the table
fills in over several sittings. After every run the tables are rewritten from all finished runs:
``fashion_mnist.{json,md,png}`` in ``--out``. Accuracy curves come from one run at the longest T
(:func:`noisesnn_jax.evaluate.accuracy_curve`). ``--jobs N`` splits the runs over N processes.
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

from noisesnn_jax import baselines, convert, evaluate, timing
from noisesnn_jax.data import dataset_from_config, train_batch
from noisesnn_jax.errors import NoiseSNNError
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.checkpoint import load_run
from noisesnn_jax.run.state import build_model, create_state
from noisesnn_jax.run.train import TrainingInterrupted, train_and_evaluate, train_step
from reproduce import train_step_memory

HERE = os.path.dirname(os.path.abspath(__file__))
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
BPTT = ["--config.method=bptt", "--config.train.timesteps=4", "--config.noise.kind=none",
        "--config.noise.mean=0.0", "--config.neuron.surrogate=atan"]
FINE_TUNE = ["--config.method=bptt", "--config.train.timesteps=4", "--config.noise.kind=none",
             "--config.neuron.surrogate=atan", "--config.train.epochs=1", "--config.train.learning_rate=2e-4"]
# label, overrides, and the T the training step runs (BPTT's unroll; 1 for the others).
METHODS = {
    "noisy": ("noisy (ours)", ["--config.method=noisy"], 1),
    "ann": ("ANN (ReLU)", ["--config.method=convert"], 1),
    "clip": ("clip-trained conversion", ["--config.method=clip"], 1),
    "qcfs": ("QCFS L=4", ["--config.method=qcfs", "--config.model.qcfs_levels=4", "--config.model.qcfs_init=8.0",
                          "--config.model.qcfs_per_layer=True", "--config.train.optimizer=sgd",
                          "--config.train.learning_rate=0.1", "--config.train.weight_decay=5e-4"], 1),
    "bptt4": ("BPTT T=4", BPTT, 4),
    # ours, then one epoch of BPTT at T=4 from the same seed's noisy run (chosen on the validation
    # split: fashion_mnist_tuning.md, noisy_bptt4_ft); its cost is the noisy run's plus that epoch.
    "noisy_ft": ("ours + 1 epoch BPTT T=4", FINE_TUNE, 4),
}
# Runs that start from another method's run of the same seed, and whose epochs cost what another
# method's do: (source method, label whose epoch cost applies).
STARTS_FROM = {"noisy_ft": ("noisy", "BPTT T=4")}
# Epochs of the extra equal-cost runs (seed 0): a third of each method's full run (ours also two
# thirds), and BPTT's at about the ReLU ANN's full training time (1x) and twice it.
BUDGET_EPOCHS = {"noisy": (5, 10), "ann": (5,), "clip": (5,), "qcfs": (5,), "bptt4": (4, 8)}
CONVERSIONS = ((99.9, "99.9%"), (100.0, "max"))


def plan(seeds: int, only: list[str], budget: bool = True) -> list[tuple[str, int, int]]:
    """(method, seed, epochs) in the order they run: seed 0 of every method, then the other
    seeds, then the equal-cost runs (epochs 0 = the config's)."""
    first = [(m, 0, 0) for m in METHODS]
    rest = [(m, s, 0) for s in range(1, seeds) for m in METHODS]
    extra = [(m, 0, e) for m, es in BUDGET_EPOCHS.items() for e in es] if budget else []
    return [r for r in first + rest + extra if not only or r[0] in only]


def run_dir(args, method: str, seed: int, epochs: int) -> str:
    return os.path.join(args.workdir, method, f"seed{seed}" if not epochs else f"epochs{epochs}")


def identity(config: dict) -> str:
    """What makes two runs the same run: the resolved config, less where the data and a
    fine-tune's source live on this machine."""
    c = json.loads(json.dumps(config))
    c.get("dataset", {}).pop("data_dir", None)
    if c.get("train", {}).get("init_from"):
        c["train"]["init_from"] = os.path.basename(os.path.normpath(c["train"]["init_from"]))
    return json.dumps(c, sort_keys=True)


def portable(result: dict, workdir: str) -> dict:
    """``result`` as the committed results file records it: no paths of this machine (where the
    data lives is dropped; a fine-tune's source is named relative to ``<workdir>``)."""
    r = json.loads(json.dumps(result))
    config = r.get("config", {})
    if config.get("dataset", {}).get("data_dir"):
        config["dataset"]["data_dir"] = ""
    source = config.get("train", {}).get("init_from")
    if source and os.path.isabs(source):
        config["train"]["init_from"] = os.path.join("<workdir>", os.path.relpath(source, os.path.abspath(workdir)))
    if "overrides" in r:
        r["overrides"] = [o.replace(os.path.abspath(workdir), "<workdir>") for o in r["overrides"]
                          if not o.startswith("--config.dataset.data_dir")]
    return r


def cached_result(workdir: str, config, recorded: str, **key) -> dict | None:
    """The finished result of a run: its workdir's ``result.json``, or else the same run (``key``
    and the same :func:`identity` of ``config``) recorded in the results file ``recorded``, which is
    committed with the repository: a fresh machine skips the runs whose results it holds."""
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    if not os.path.exists(recorded):
        return None
    with open(recorded) as f:
        runs = json.load(f).get("runs", [])
    want = identity(json.loads(config_lib.to_json(config)))
    for r in runs:
        if all(r.get(k) == v for k, v in key.items()) and "config" in r and identity(r["config"]) == want:
            os.makedirs(workdir, exist_ok=True)
            _dump(r, done)
            return r
    return None


def run_config(method: str, seed: int, epochs: int, args):
    """The validated config of one planned run."""
    config = config_lib.load_config(args.config)
    source = ([f"--config.train.init_from={os.path.abspath(run_dir(args, STARTS_FROM[method][0], seed, 0))}"]
              if method in STARTS_FROM else [])
    config_lib.apply_overrides(config, METHODS[method][1] + [f"--config.seed={seed}"] + args.extra + source
                               + ([f"--config.train.epochs={epochs}"] if epochs else []))
    return config_lib.validate(config)


def wait_for_source(method: str, seed: int, args, todo) -> None:
    """A run that starts from another run: train that one first here, or wait while another
    process trains it."""
    import time

    if method not in STARTS_FROM or os.path.exists(os.path.join(run_dir(args, method, seed, 0), "result.json")):
        return  # nothing to start from, or the run itself is finished
    source = STARTS_FROM[method][0]
    src = run_dir(args, source, seed, 0)
    while not os.path.exists(os.path.join(src, "result.json")):
        if claim(src):
            run_one(source, seed, 0, args)
            write(args, todo)
        else:
            time.sleep(30)
    restore_checkpoint_of(source, seed, args)


def restore_checkpoint_of(method: str, seed: int, args) -> None:
    """Give a finished run its checkpoint again where only its result came back (restored from
    the committed results on a new machine): train it once more, from the same config and seed,
    which gives the same variables (training is deterministic on one machine). A marker file keeps
    an interrupted retraining from passing for a finished one; one process retrains, the others wait."""
    import fcntl

    src = run_dir(args, method, seed, 0)
    marker = os.path.join(src, "retraining")

    def missing() -> bool:
        ckpt = os.path.join(src, "checkpoints")
        return os.path.exists(marker) or not (os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)))

    if not missing():
        return
    with open(os.path.join(src, "retrain.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if missing():
            open(marker, "w").close()
            print(f"== {METHODS[method][0]}, seed {seed}: its result is recorded but its checkpoint is not on this "
                  f"machine; training it again for the runs that start from it: {src}", flush=True)
            train_and_evaluate(run_config(method, seed, 0, args), src, progress=False,
                               log=lambda m: print("   " + m, flush=True))
            os.remove(marker)


def restore_recorded(args, todo) -> None:
    """Put the results that ``--out``'s ``fashion_mnist.json`` records for planned runs into their
    workdirs (before any run rewrites that file), so they are not trained again."""
    for method, seed, epochs in todo:
        cached_result(run_dir(args, method, seed, epochs), run_config(method, seed, epochs, args),
                      os.path.join(args.out, "fashion_mnist.json"), method=method, seed=seed, budget_run=bool(epochs))


def run_one(method: str, seed: int, epochs: int, args) -> dict:
    """Train (or resume) one run, evaluate it, and cache the result in its workdir."""
    workdir = run_dir(args, method, seed, epochs)
    if os.path.exists(os.path.join(workdir, "result.json")):
        with open(os.path.join(workdir, "result.json")) as f:
            return json.load(f)
    label, overrides, train_t = METHODS[method]
    config = run_config(method, seed, epochs, args)
    print(f"== {label}, seed {seed}, {config.train.epochs} epochs: {workdir}", flush=True)
    train_and_evaluate(config, workdir, progress=False, log=lambda m: print("   " + m, flush=True))
    config, model, variables, ds = load_run(workdir, log=lambda m: None)
    assert not config.dataset.validation, "the claims table is measured on the test split"
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    result = {"method": method, "label": label, "seed": seed, "epochs": config.train.epochs,
              "budget_run": bool(epochs), "config": json.loads(config_lib.to_json(config)),
              "epoch_seconds": statistics.median([e["epoch_seconds"] for e in logged[1:]] or
                                                 [logged[0]["epoch_seconds"]]),
              "train_step_temp_mib": train_step_memory(config, ds, train_t), "curves": {}}
    curve = functools.partial(_curve, ds=ds, timesteps=args.timesteps)
    if method in ("ann", "clip", "qcfs"):
        result["ann_accuracy"] = evaluate.evaluate_dataset(model, variables, ds)["accuracy"]
    if method == "ann" and not epochs:
        batches = [ds.train_batch(config.train.batch_size, seed, i)[0] for i in range(config.convert.num_batches)]
        for pct, name in CONVERSIONS:
            th = baselines.activation_statistics(model, variables, batches, pct)
            for v0, vname in ((0.0, "0"), (0.5, "theta/2")):
                print(f"   evaluating conversion {name}, v0={vname}", flush=True)
                result["curves"][f"conversion {name}, v0={vname}"] = curve(*baselines.ann_to_snn(model, variables, th, v0))
    elif method == "ann":  # equal-cost runs: the stronger classic conversion only
        th = baselines.activation_statistics(model, variables, [ds.train_batch(config.train.batch_size, seed, i)[0]
                                                                for i in range(config.convert.num_batches)], 99.9)
        result["curves"]["conversion 99.9%, v0=theta/2"] = curve(*baselines.ann_to_snn(model, variables, th, 0.5))
    elif method in ("clip", "qcfs"):
        result["curves"][label] = curve(*baselines.ann_to_snn(model, variables, None, 0.5))
    else:
        result["t1_accuracy"] = evaluate.evaluate_dataset(model, variables, ds)["accuracy"]
        if method == "noisy":
            result["t1_sampled_accuracy"] = evaluate.evaluate_dataset(
                model, variables, ds, sample_noise_key=jax.random.key(seed + 1))["accuracy"]
        print(f"   evaluating at T = {list(args.timesteps)}", flush=True)
        result["curves"][label] = curve(model, variables)
    _dump(result, os.path.join(workdir, "result.json"))
    return result


def _curve(model, variables, ds, timesteps) -> list[float]:
    folded = convert.fold_batchnorm(model, variables, ds.test_examples(np.arange(1))[0])
    return evaluate.accuracy_curve(*folded, ds, timesteps)


def finished_results(args, todo) -> list[dict]:
    """The cached results of the planned runs that have finished (by any process)."""
    out = []
    for method, seed, epochs in todo:
        path = os.path.join(run_dir(args, method, seed, epochs), "result.json")
        if os.path.exists(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def training_cost(args, repeats: int = 7) -> dict:
    """Seconds per epoch of every method from step times measured side by side in this process
    (interleaved round-robin after warm-up, median of ``repeats``) times the steps of an epoch, and
    the compiled step's temporary memory; cached in ``cost.json``."""
    path = os.path.join(args.workdir, "cost.json")
    if not os.path.exists(path):
        import optax

        print("== training cost: step times side by side", flush=True)
        busy = cores_busy()
        if busy > 0.25:  # these times set the equal-cost table: other work on the cores skews them
            print(f"   warning: the cores were {busy:.0%} busy before measuring; stop other work and delete "
                  f"{path} to measure again", flush=True)
        runs, mem, spe = {}, {}, None
        ds = None
        for method, (label, overrides, T) in METHODS.items():
            if method in STARTS_FROM:  # its epochs cost what another method's do
                continue
            cfg = config_lib.load_config(args.config)
            config_lib.validate(config_lib.apply_overrides(cfg, overrides + args.extra))
            ds = ds or dataset_from_config(cfg)
            spe = ds.num_train // cfg.train.batch_size
            model = build_model(cfg, ds.num_classes)
            state = create_state(model, optax.adam(1e-3), ds.input_shape, jax.random.key(0))
            xb, yb = train_batch(ds, cfg.train.batch_size, 0, 0)
            step = functools.partial(train_step, num_classes=ds.num_classes, timesteps=T)
            mem[label] = timing.compiled_temp_mib(step, state, xb, yb, jax.random.key(0))
            fn, box = jax.jit(step, donate_argnums=0), {"s": state}

            def run(fn=fn, box=box, xb=xb, yb=yb):
                box["s"], out = fn(box["s"], xb, yb, jax.random.key(0))
                jax.block_until_ready(out)
            runs[label] = run
        median = timing.measure(runs, repeats)
        os.makedirs(args.workdir, exist_ok=True)
        _dump({"epoch_seconds": {k: v * spe for k, v in median.items()}, "train_step_temp_mib": mem,
               "repeats": repeats, "steps_per_epoch": spe, "machine": timing.machine(),
               "cores_busy_before": round(busy, 3)}, path)
    with open(path) as f:
        return json.load(f)


def cores_busy(seconds: float = 2.0) -> float:
    """The fraction of the cores' time spent busy over the next ``seconds`` (Linux ``/proc/stat``;
    0 where it cannot be read): other work running beside a timing."""
    import time

    def times():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle0, total0 = times()
        time.sleep(seconds)
        idle1, total1 = times()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _dump(obj, path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"  # one per process: --jobs workers may write at once
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


DEPLOYED = {"ann": "conversion 99.9%, v0=theta/2"}  # the spiking network each method deploys, if not its own label


def _train_seconds(r: dict, results: list[dict], cost: dict | None) -> float | None:
    """A run's training time: its epochs times its method's side-by-side epoch cost, plus its
    source run's time when it starts from one."""
    per_epoch = (cost or {}).get("epoch_seconds", {})
    source, cost_label = STARTS_FROM.get(r["method"], (None, r["label"]))
    if cost_label not in per_epoch:
        return None
    seconds = per_epoch[cost_label] * r["epochs"]
    if source is None:
        return seconds
    src = [s for s in results if s["method"] == source and s["seed"] == r["seed"] and not s.get("budget_run")]
    before = _train_seconds(src[0], results, cost) if src else None
    return None if before is None else before + seconds


def summarize(results: list[dict], timesteps, cost: dict | None = None) -> dict:
    """Mean, min and max over seeds of every curve and scalar of the full-length runs, by curve
    name; and the equal-cost points of seed 0 (every length), training time from ``cost``."""
    curves: dict[str, list] = {}
    scalars: dict[str, dict[str, list]] = {}
    points = []
    for r in results:
        if not r.get("budget_run"):
            for name, c in r["curves"].items():
                curves.setdefault(name, []).append(c)
            for k in ("t1_accuracy", "t1_sampled_accuracy", "ann_accuracy", "epoch_seconds", "train_step_temp_mib"):
                if k in r:
                    scalars.setdefault(r["label"], {}).setdefault(k, []).append(r[k])
        if r["seed"] == 0:
            curve = r["curves"][DEPLOYED.get(r["method"], r["label"])]
            points.append({"method": r["method"], "label": r["label"], "epochs": r["epochs"],
                           "budget_run": bool(r.get("budget_run")),
                           "train_seconds": _train_seconds(r, results, cost),
                           "ann_accuracy": r.get("ann_accuracy"),
                           **{f"T={t}": curve[list(timesteps).index(t)] for t in (4, 8) if t in timesteps}})
    stat = lambda a: {"mean": np.mean(a, 0).tolist(), "min": np.min(a, 0).tolist(),  # noqa: E731
                      "max": np.max(a, 0).tolist(), "seeds": len(a)}
    ann = [p for p in points if p["method"] == "ann" and not p["budget_run"]]  # the ANN's full run: 1x
    full = ann[0]["train_seconds"] if ann and ann[0]["train_seconds"] else None
    for p in points:
        p["budget"] = p["train_seconds"] / full if full and p["train_seconds"] else None
    return {"timesteps": list(timesteps),
            "curves": {k: stat(np.asarray(v)) for k, v in curves.items()},
            "scalars": {k: {n: stat(np.asarray(v)) for n, v in d.items()} for k, d in scalars.items()},
            "equal_cost": sorted(points, key=lambda p: (list(METHODS).index(p["method"]), p["epochs"]))}


def render(summary: dict, planned: int, finished: int, cost: dict | None = None) -> str:
    """Markdown tables of a summary."""
    T = summary["timesteps"]
    sc = summary["scalars"]
    pct = lambda s, i=None: (f"{100 * (s['mean'] if i is None else s['mean'][i]):.2f}" + (  # noqa: E731
        "" if s["seeds"] == 1 else f" [{100 * (s['min'] if i is None else s['min'][i]):.2f}, "
                                   f"{100 * (s['max'] if i is None else s['max'][i]):.2f}]"))
    out = [f"Full Fashion-MNIST (60,000 train / 10,000 test), `make reproduce-fashion-mnist`, "
           f"{finished} of {planned} planned runs finished. Test accuracy (%), mean [min, max] over seeds. "
           f"Recipe and baseline settings chosen on the validation split (`fashion_mnist_tuning.md`).", ""]
    anns = [(label, s["ann_accuracy"]) for label, s in sc.items() if "ann_accuracy" in s]
    if anns:
        out += ["The ANNs (the same CNN, as ANNs): " + "; ".join(f"{label} {pct(a)} ({a['seeds']} seeds)"
                                                              for label, a in anns) + ".", ""]
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
    points = summary.get("equal_cost", [])
    if points:
        out += ["", "Equal cost (seed 0): accuracy of the deployed spiking network at T=4 and T=8 against training "
                "time, each run's epochs times its method's side-by-side epoch cost; budget = that time over "
                "the ReLU ANN's full run. The ANN's row deploys its 99.9% conversion (v0 = theta/2).", "",
                "| method | epochs | training time (min) | budget | ANN | T=4 | T=8 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for p in points:
            minutes = f"{p['train_seconds'] / 60:.1f}" if p["train_seconds"] else ""
            budget = f"{p['budget']:.2f}x" if p["budget"] else ""
            ann = f"{100 * p['ann_accuracy']:.2f}" if p.get("ann_accuracy") is not None else ""
            acc = " | ".join(f"{100 * p[t]:.2f}" if t in p else "" for t in ("T=4", "T=8"))
            out.append(f"| {p['label']} | {p['epochs']} | {minutes} | {budget} | {ann} | {acc} |")
    out += ["", "Wall time per epoch of the runs themselves (median over epochs after the first; runs share the "
            "machine, so these overlap) and XLA's temporary buffers of the compiled train step:", "",
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
    """Left: accuracy against T with the seed range as a band, the ReLU ANN dashed. Right: the
    deployed network's accuracy at T=4 against training time (the equal-cost points)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    T = summary["timesteps"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, c in summary["curves"].items():
        ax.plot(T, [100 * a for a in c["mean"]], marker="o", ms=3, label=name, lw=2.5 if "ours" in name else 1.2)
        if c["seeds"] > 1:
            ax.fill_between(T, [100 * a for a in c["min"]], [100 * a for a in c["max"]], alpha=0.15)
    ann = summary["scalars"].get("ANN (ReLU)", {}).get("ann_accuracy")
    if ann:
        ax.axhline(100 * ann["mean"], ls="--", color="gray", label="ReLU ANN")
    ax.set_xscale("log", base=2)
    _axes(ax, "time steps T", "test accuracy (%)", "Fashion-MNIST: accuracy against T")
    by_method: dict[str, list] = {}
    for p in summary.get("equal_cost", []):
        if p["train_seconds"] and "T=4" in p:
            by_method.setdefault(p["label"], []).append((p["train_seconds"] / 60, 100 * p["T=4"]))
    for label, pts in by_method.items():
        pts.sort()
        bx.plot(*zip(*pts), marker="o", label=label, lw=2.5 if "ours" in label else 1.2)
    _axes(bx, "training time on 2 CPU cores (min, side-by-side epoch cost x epochs)", "test accuracy at T=4 (%)",
          "Equal cost (seed 0)")
    fig.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def _axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_ylim(80, 95)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def write(args, todo, cost: dict | None = None) -> None:
    """Rewrite ``fashion_mnist.{json,md,png}`` from the finished runs; the ``--jobs`` workers take
    turns (a lock file in ``--workdir``), so that each file is one worker's whole writing."""
    import fcntl

    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "write.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write(args, todo, cost)


def _write(args, todo, cost: dict | None) -> None:
    results = finished_results(args, todo)
    if not results:
        return
    if cost is None and os.path.exists(os.path.join(args.workdir, "cost.json")):
        with open(os.path.join(args.workdir, "cost.json")) as f:
            cost = json.load(f)
    planned = len(todo)
    summary = summarize(results, args.timesteps, cost)
    summary["train_cost"] = cost
    summary.update({"date": datetime.date.today().isoformat(), "runs": [portable(r, args.workdir) for r in results],
                    "planned_runs": planned, "config": os.path.relpath(args.config, os.path.dirname(HERE)),
                    "overrides": [a for a in args.extra if not a.startswith("--config.dataset.data_dir")],
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "jax": jax.__version__, "backend": jax.default_backend()}})
    os.makedirs(args.out, exist_ok=True)
    _dump(summary, os.path.join(args.out, "fashion_mnist.json"))
    md = render(summary, planned, len(results), cost)
    tmp = os.path.join(args.out, f"fashion_mnist.md.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(md)
    os.replace(tmp, os.path.join(args.out, "fashion_mnist.md"))
    plot(summary, os.path.join(args.out, "fashion_mnist.png"))
    print(md, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(HERE, "configs", "fashion_mnist.py"))
    p.add_argument("--workdir", default="runs/fashion_mnist")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--seeds", type=int, default=3, help="seeds of every method")
    p.add_argument("--only", default="", help=f"comma-separated methods to run, of {list(METHODS)}")
    p.add_argument("--no-budget", action="store_true", help="skip the equal-cost runs of other lengths")
    p.add_argument("--timesteps", default=",".join(map(str, TIMESTEPS)))
    p.add_argument("--jobs", type=int, default=1, help="processes that share the runs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of the --jobs processes
    p.add_argument("--tables-only", action="store_true",
                   help="rewrite the tables from the finished runs (and --workdir's cost.json) and stop; trains nothing")
    args, args.extra = p.parse_known_args(argv)
    args.timesteps = tuple(int(t) for t in args.timesteps.split(","))
    only = [m for m in args.only.split(",") if m]
    unknown = sorted(set(only) - set(METHODS))
    if unknown:
        print(f"fashion_mnist: error: --only {unknown} unknown; choose from {list(METHODS)}", file=sys.stderr)
        return 2
    todo = plan(args.seeds, only, not args.no_budget)
    try:
        if not args.worker:
            restore_recorded(args, todo)
        if args.tables_only:
            write(args, todo)
            return 0
        # the side-by-side cost first, on a quiet machine: the runs follow (the equal-cost table needs it)
        cost = None if args.worker or args.no_budget else training_cost(args)
        if args.jobs > 1:
            return run_jobs(argv if argv is not None else sys.argv[1:], args, todo)
        for method, seed, epochs in todo:
            wait_for_source(method, seed, args, todo)
            if claim(run_dir(args, method, seed, epochs)):
                run_one(method, seed, epochs, args)
                write(args, todo)
        if not args.worker:
            write(args, todo, cost)
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
        write(args, todo)
    except NoiseSNNError as e:
        print(f"fashion_mnist: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
