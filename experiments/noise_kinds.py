"""Which noise is the cheap one that keeps the accuracy: cost and accuracy of every noise kind.

    python experiments/noise_kinds.py --out experiments/results [--fashion]

1. Cost: the T=1 noisy training step of the demo CNN (batch 64, ``hash`` sampler) for each kind,
   against the same CNN's ReLU step and the deterministic (``none``) step, timed side by side
   (interleaved medians, ``noisesnn_jax.timing.measure``).
2. Accuracy on mnist5k: the noise ablation's recipe (``experiments/configs/mnist5k.py``, 6 epochs,
   3 seeds) for each kind, at T = 1 (noise at its mean), 2, 4, 8 and 32.
3. With ``--fashion``: full Fashion-MNIST, ``make reproduce-fashion-mnist``'s recipe for ours
   (3 seeds, 12 epochs) with each of ``--fashion-kinds`` (gaussian, triangular, uniform); runs
   live in ``runs/fashion_mnist`` (gaussian, the recipe's own) and ``runs/fashion_mnist_<kind>``,
   and are trained where missing (about 12 minutes per run on 2 cores; resumable, a finished run
   is only read).

Writes ``noise_kinds.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("gaussian", "triangular", "logistic", "uniform")
MNIST_T = (1, 2, 4, 8, 32)
FASHION_T = (1, 2, 4, 8, 16, 32, 64)


def step_cost(repeats: int) -> dict[str, float]:
    """Median seconds of the T=1 training step per kind, and of the ReLU and deterministic steps."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    import bench

    from noisesnn_jax import timing
    from noisesnn_jax.models import CNN
    from noisesnn_jax.spikes import Noise

    models = {"relu ANN": CNN(activation="relu"), "none": CNN(noise=Noise("none"))}
    models.update({k: CNN(noise=Noise(k, sampler="hash")) for k in KINDS})
    return timing.measure({name: bench._train_case(m, 64)[0] for name, m in models.items()}, repeats)


def mnist5k(workdir: str, seeds: int, epochs: int) -> dict[str, list[list[float]]]:
    """Accuracy curves ``[seed][T]`` per kind on mnist5k (runs resumed or read where finished)."""
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.train import train_and_evaluate
    from noisesnn_jax.run.workdir import evaluate_run

    curves: dict[str, list[list[float]]] = {}
    for kind in KINDS:
        for seed in range(seeds):
            wd = os.path.join(workdir, kind, f"seed{seed}")
            config = config_lib.load_config(os.path.join(HERE, "configs", "mnist5k.py"))
            config_lib.apply_overrides(config, [f"--config.noise.kind={kind}", f"--config.seed={seed}",
                                                f"--config.train.epochs={epochs}"])
            print(f"== mnist5k {kind} seed {seed}: {wd}", flush=True)
            train_and_evaluate(config_lib.validate(config), wd, progress=False, log=lambda m: None)
            r = evaluate_run(wd, timesteps=MNIST_T, log=lambda m: None)
            curves.setdefault(kind, []).append([float(a) for a in r["accuracy"]])
    return curves


def fashion(data_dir: str, kinds: list[str]) -> dict[str, list[list[float]]]:
    """Fashion-MNIST curves ``[seed][T]`` of ours per kind, through ``experiments/fashion_mnist.py``."""
    sys.path.insert(0, HERE)
    import fashion_mnist

    curves = {}
    for kind in kinds:
        workdir = f"runs/fashion_mnist_noise_{kind}"
        with tempfile.TemporaryDirectory() as out:
            code = fashion_mnist.main(["--workdir", workdir, "--out", out, "--only", "noisy", "--seeds", "3", "--no-budget",
                                       f"--config.noise.kind={kind}", f"--config.dataset.data_dir={data_dir}"])
            if code != 0:
                raise SystemExit(code)
            with open(os.path.join(out, "fashion_mnist.json")) as f:
                runs = json.load(f)["runs"]
        curves[kind] = [r["curves"]["noisy (ours)"] for r in sorted(runs, key=lambda r: r["seed"])]
    return curves


def _cell(values: list[float]) -> str:
    pct = [100 * v for v in values]
    return f"{statistics.mean(pct):.2f} [{min(pct):.2f}, {max(pct):.2f}]"


def render(r: dict) -> str:
    cost = r["step_ms"]
    lines = [f"Measured {r['date']} on {r['machine']} by `{r['command']}`.", "",
             f"T=1 training step of the demo CNN, batch 64, `hash` sampler; median of {r['repeats']} "
             f"interleaved repeats.", "",
             "| noise | step (ms) | ratio to ReLU step |", "|---|---:|---:|"]
    for k, v in cost.items():
        lines.append(f"| {k} | {v:.1f} | {v / cost['relu ANN']:.2f} |")
    for title, key, ts in (("mnist5k, 6 epochs", "mnist5k", MNIST_T),
                           ("Full Fashion-MNIST, 12 epochs (`make reproduce-fashion-mnist`'s recipe)", "fashion_mnist",
                            FASHION_T)):
        if not r.get(key):
            continue
        lines += ["", f"{title}: test accuracy (%), mean [min, max] over seeds; T=1 with the noise at its mean.", "",
                  "| noise | seeds | " + " | ".join(f"T={t}" for t in ts) + " |",
                  "|---|---:|" + "---:|" * len(ts)]
        for kind, per_seed in r[key].items():
            cols = [_cell([c[i] for c in per_seed]) for i in range(len(ts))]
            lines.append(f"| {kind} | {len(per_seed)} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--workdir", default="runs/noise_kinds")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--fashion", action="store_true", help="also Fashion-MNIST (3 seeds per kind; long)")
    p.add_argument("--fashion-kinds", default="gaussian,triangular,uniform",
                   help="the kinds trained on Fashion-MNIST (about 40 minutes each where not trained yet)")
    p.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")))
    args = p.parse_args(argv)
    from noisesnn_jax import timing

    result = {"date": datetime.date.today().isoformat(), "machine": timing.machine(), "repeats": args.repeats,
              "command": "python experiments/noise_kinds.py --out experiments/results"
              + (" --fashion" if args.fashion else "")}
    result["mnist5k"] = mnist5k(os.path.join(args.workdir, "mnist5k"), args.seeds, args.epochs)
    if args.fashion:
        result["fashion_mnist"] = fashion(args.data_dir, [k for k in args.fashion_kinds.split(",") if k])
    print("== step cost", flush=True)
    result["step_ms"] = {k: 1e3 * v for k, v in step_cost(args.repeats).items()}
    timing.write_report(args.out, "noise_kinds", result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
