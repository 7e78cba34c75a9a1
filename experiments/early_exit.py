"""Dynamic T on Fashion-MNIST: per-sample early exit against the fixed T=8 network.

    python experiments/early_exit.py --workdirs runs/fashion_mnist/noisy/seed0,... --out experiments/results

For each trained run (ours, noisy T=1 training): the margin threshold is chosen on the first half
of the test split (the smallest margin of a grid whose accuracy there is within ``--tolerance``
points of the fixed T=8 network's) and reported on the second half; then the whole test split
runs through the real early exit (in chunks of 1, 1, 2, 4 steps on the compiled path, the batch
compacted between chunks as samples stop) and through the
fixed T=8 network, timed side by side (median of ``--repeats`` interleaved passes). The exact rule
(never changes the full-T prediction) is reported too. Writes ``early_exit.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MARGINS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def run(workdir: str, T: int, tolerance: float, repeats: int) -> dict:
    from noisesnn_jax import evaluate, timing
    from noisesnn_jax.convert import fold_batchnorm
    from noisesnn_jax.early_exit import ExitRule, evaluate_early_exit, readout_bound, simulate_rule
    from noisesnn_jax.run.checkpoint import restore_run

    config, model, variables, ds, step = restore_run(workdir, log=lambda m: None)
    x, y = ds.test_examples(np.arange(ds.num_test))
    model, variables = fold_batchnorm(model, variables, x[:8])
    logits = np.concatenate([np.asarray(evaluate.step_logits(model, variables, x[i:i + 1000], T))
                             for i in range(0, len(x), 1000)], axis=1)
    half = len(y) // 2
    cal, test = slice(0, half), slice(half, None)
    fixed = np.argmax(logits.sum(0), -1)
    fixed_cal = float(np.mean(fixed[cal] == y[cal]))
    sweep = []
    for m in MARGINS:
        r = simulate_rule(logits[:, cal], ExitRule("margin", m))
        sweep.append({"margin": m, "accuracy": float(np.mean(r["predictions"] == y[cal])),
                      "mean_steps": float(r["steps"].mean())})
    ok = [s for s in sweep if s["accuracy"] >= fixed_cal - tolerance / 100]
    margin = ok[0]["margin"] if ok else MARGINS[-1]
    rule = ExitRule("margin", margin)
    held = simulate_rule(logits[:, test], rule)
    bound = readout_bound(model, variables, x[:8])
    exact = simulate_rule(logits, ExitRule("exact"), bound)
    full = evaluate_early_exit(model, variables, x, y, T, rule, batch_size=500, repeats=repeats)
    return {"workdir": workdir, "checkpoint_step": int(step), "T": T, "margin": margin, "sweep_first_half": sweep,
            "fixed_accuracy_first_half": fixed_cal,
            "second_half": {"accuracy": float(np.mean(held["predictions"] == y[test])),
                            "fixed_accuracy": float(np.mean(fixed[test] == y[test])),
                            "mean_steps": float(held["steps"].mean())},
            "exact": {"accuracy": float(np.mean(exact["predictions"] == y)), "mean_steps": float(exact["steps"].mean()),
                      "same_as_fixed": int(np.sum(exact["predictions"] == fixed))},
            "full": full, "machine": timing.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdirs", default=",".join(f"runs/fashion_mnist/noisy/seed{s}" for s in range(3)))
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--tolerance", type=float, default=0.05, help="points below fixed T allowed when choosing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--name", default="early_exit")
    args = p.parse_args(argv)
    results = []
    for w in args.workdirs.split(","):
        print(f"== {w}", flush=True)
        results.append(run(w, args.timesteps, args.tolerance, args.repeats))
    T = args.timesteps
    md = [f"Per-sample early exit against fixed T={T} on the test images of each run (ours, noisy T=1 "
          f"training; one row per run). Margin rule: stop when the mean logits' top two differ by at least the "
          f"margin, chosen on the first half of the test images (smallest margin within {args.tolerance} points of "
          f"fixed T={T} there). Wall time: the whole test split, batch 500, early exit in chunks of 1, 1, 2, 4 steps "
          f"with the batch compacted between chunks, against the fixed-T fast path, median of {args.repeats} "
          f"interleaved passes "
          f"({results[0]['machine']}).", "",
          f"| run | margin | 2nd half: accuracy, fixed T={T} (%) | 2nd half: mean steps | all: accuracy, fixed (%) "
          f"| all: mean steps | SOPs / image vs fixed | wall time vs fixed | exact rule: mean steps |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        f = r["full"]
        md.append(f"| {r['workdir']} ({f['images']:,} images) | {r['margin']} | {100 * r['second_half']['accuracy']:.2f}, "
                  f"{100 * r['second_half']['fixed_accuracy']:.2f} | {r['second_half']['mean_steps']:.2f} | "
                  f"{100 * f['accuracy']:.2f}, {100 * f['fixed_accuracy']:.2f} | {f['mean_steps']:.2f} | "
                  f"{f['sops'] / f['fixed_sops']:.2f}x | {f['wall_seconds'] / f['fixed_wall_seconds']:.2f}x "
                  f"({f['wall_seconds']:.1f} s / {f['fixed_wall_seconds']:.1f} s) | {r['exact']['mean_steps']:.2f} |")
    hist = results[0]["full"]["steps_histogram"]
    md += ["", f"Steps used ({results[0]['workdir']}, margin {results[0]['margin']}): "
           + ", ".join(f"{t}: {n}" for t, n in hist.items() if n), "",
           f"Command: `python experiments/early_exit.py {' '.join(sys.argv[1:] if argv is None else argv)}`"]
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as fh:
        json.dump({"date": stamp, "results": results}, fh, indent=1)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
