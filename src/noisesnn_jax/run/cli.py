"""The ``noisesnn`` command: ``train``, ``evaluate``, ``export``, ``prepare`` and ``config``.

    noisesnn train --config experiments/configs/mnist5k.py --workdir runs/m [--config.x=y ...]
    noisesnn evaluate --workdir runs/m --timesteps 1,2,4,8,16,32 [--json out.json] [--plot out.png]
    noisesnn export --workdir runs/m --format nir --timesteps 8 --out model.nir
    noisesnn prepare fashion_mnist [--source-dir DIR] [--data-dir DIR]
    noisesnn config --config experiments/configs/mnist5k.py [--config.x=y ...]

A user's mistake (bad config value, unknown key, bad data, missing or corrupt checkpoint) ends
with one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from noisesnn_jax.errors import NoiseSNNError


def _parse_timesteps(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timesteps {text!r} is invalid; use integers >= 1 "
                                         f"separated by commas, e.g. 1,2,4,8") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--timesteps {text!r} is invalid; use integers >= 1 "
                                         f"separated by commas, e.g. 1,2,4,8")
    return values


def format_table(results: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """Markdown table: one row per T, one column per result (accuracy in %).

    Args:
      results: :func:`noisesnn_jax.run.workdir.evaluate_run` reports, of the same ``timesteps``.
      names: the column names; ``None`` takes each result's ``name``, else its ``workdir``.

    Returns:
      The table, with a first row for the T=1 network with sampled noise.
    """
    names = names or [r.get("name", r["workdir"]) for r in results]
    timesteps = results[0]["timesteps"]
    head = "| T | " + " | ".join(names) + " |"
    sep = "|---:|" + "---:|" * len(results)
    rows = [head, sep]
    rows.append("| T=1, noise sampled | " + " | ".join(
        f"{100 * r['t1_noisy_accuracy']:.2f}" for r in results) + " |")
    for i, T in enumerate(timesteps):
        rows.append(f"| {T} | " + " | ".join(f"{100 * r['accuracy'][i]:.2f}" for r in results) + " |")
    return "\n".join(rows)


def plot_accuracy(results: list[dict[str, Any]], path: str, names: list[str] | None = None,
                  title: str = "") -> None:
    """Accuracy against T (log2 axis), one line per result, written to ``path`` (PNG).

    A ReLU result is a dashed horizontal line; each spiking result has its T=1 accuracy dotted.

    Args:
      results: :func:`noisesnn_jax.run.workdir.evaluate_run` reports.
      path: the image file (its extension gives the format; PNG by default), written atomically.
      names: the legend's names; ``None`` takes each result's ``name``, else its ``workdir``.
      title: the plot's title; ``""`` gives the default.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = names or [r.get("name", r["workdir"]) for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r, name in zip(results, names):
        if r.get("activation") == "relu":
            ax.axhline(100 * r["accuracy"][0], ls="--", color="gray", label=name)
            continue
        ax.plot(r["timesteps"], [100 * a for a in r["accuracy"]], marker="o", label=name)
        ax.axhline(100 * r["t1_accuracy"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T (converted network)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Accuracy after T=1 -> T=N conversion (dotted: T=1)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from noisesnn_jax.interop.export import write_atomic
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format=os.path.splitext(path)[1][1:] or "png"))
    plt.close(fig)


def write_json(path: str, result: dict) -> None:
    """Write ``result`` to ``path`` as JSON, atomically.

    A failed write (disk full, permission) leaves no half-written file, and a previous file there
    untouched. Numpy arrays are written as lists, other non-JSON values as strings.

    Args:
      path: the file.
      result: the report.
    """
    import numpy as np

    from noisesnn_jax.interop.export import write_atomic

    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
    write_atomic(path, dump)


def init_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` for a multi-process run, before JAX is first used.

    ``--distributed`` alone lets JAX detect the cluster (TPU pods, SLURM, ...); ``--coordinator``,
    ``--num-processes`` and ``--process-id`` give it explicitly (e.g. several GPU hosts).
    Without either, nothing is done.

    Args:
      args: the parsed command line (``distributed``, ``coordinator``, ``num_processes``,
        ``process_id``, ``heartbeat_timeout``).

    Raises:
      NoiseSNNError: ``--coordinator`` without ``--num-processes`` and ``--process-id``, or a
        heartbeat timeout below 1 second.
    """
    if not (args.distributed or args.coordinator):
        return
    import jax
    kwargs = {}
    if args.coordinator:
        if args.num_processes is None or args.process_id is None:
            raise NoiseSNNError("--coordinator needs --num-processes and --process-id")
        kwargs = dict(coordinator_address=args.coordinator, num_processes=args.num_processes,
                      process_id=args.process_id)
    if args.heartbeat_timeout is not None:
        if args.heartbeat_timeout < 1:
            raise NoiseSNNError(f"--heartbeat-timeout={args.heartbeat_timeout} is invalid; give whole seconds >= 1")
        kwargs["heartbeat_timeout_seconds"] = args.heartbeat_timeout
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # pragma: no cover - older JAX
        pass
    jax.distributed.initialize(**kwargs)


def _cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    init_distributed(args)
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.train import train_and_evaluate
    config = config_lib.load_config(args.config) if args.config else config_lib.get_config()
    config_lib.apply_overrides(config, extra)
    config_lib.validate(config)
    train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    return 0


def _cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise NoiseSNNError(f"evaluate takes no config overrides (got {extra[0]!r}); it uses the "
                            f"workdir's saved config")
    init_distributed(args)
    import jax

    if args.early_exit:
        return _early_exit(args)
    from noisesnn_jax.run.workdir import evaluate_run
    result = evaluate_run(args.workdir, args.timesteps, fold_bn=not args.no_fold_bn,
                          log=lambda m: print(m, file=sys.stderr), data_dir=args.data_dir)
    if jax.process_index() != 0:  # every process evaluates its rows; process 0 reports
        return 0
    print(f"{result['dataset']} / {result['model']} ({result['activation']}, noise "
          f"{result['noise']['kind']}), {result['num_test']} test images")
    print(f"T=1 accuracy, noise at its mean: {100 * result['t1_accuracy']:.2f}%; "
          f"noise sampled: {100 * result['t1_noisy_accuracy']:.2f}%")
    if "ann_accuracy" in result:
        print(f"ANN before conversion ({result['method']}): {100 * result['ann_accuracy']:.2f}%")
    print("| T | accuracy (%) | mean firing rate | SOPs / image | energy vs ANN |")
    print("|---:|---:|---:|---:|---:|")
    for T, acc in zip(result["timesteps"], result["accuracy"]):
        rates = result["firing_rates"][str(T)]
        mean_rate = sum(rates.values()) / len(rates) if rates else float("nan")
        ops = result.get("ops", {}).get(str(T))
        cost = f"{ops['sops']:.3g} | {ops['energy_ratio']:.3f}" if ops else "- | -"
        print(f"| {T} | {100 * acc:.2f} | {mean_rate:.4f} | {cost} |")
    if result.get("ops"):
        print("SOPs: accumulates of the spiking layers summed over T (the first layer's MACs are counted "
              "once); energy: 0.9 pJ/AC, 4.6 pJ/MAC (45 nm, Horowitz 2014)")
        above = [T for T, o in result["ops"].items() if o["energy_ratio"] > 1]
        if above:
            print(f"at T = {', '.join(above)} the spiking network's estimated energy exceeds the ANN's (ratio > 1): "
                  f"the synaptic operations summed over T outnumber the ANN's multiply-accumulates")
    print(f"checkpoint step {result['provenance']['checkpoint_step']}, noisesnn-jax "
          f"{result['provenance']['noisesnn_jax']}, jax {result['provenance']['jax']}")
    if args.json:
        write_json(args.json, result)
    if args.plot:
        plot_accuracy([result], args.plot, [os.path.basename(os.path.normpath(args.workdir))])
    return 0


def _early_exit(args: argparse.Namespace) -> int:

    from noisesnn_jax.early_exit import ExitRule
    from noisesnn_jax.run.workdir import early_exit_run
    rule = ExitRule.parse(args.early_exit)
    r = early_exit_run(args.workdir, rule, max(args.timesteps) if args.timesteps else None, data_dir=args.data_dir,
                       log=lambda m: print(m, file=sys.stderr))
    T = r["max_timesteps"]
    print(f"{r['dataset']} / {r['model']}: early exit ({args.early_exit}) against fixed T={T}, {r['images']} test images")
    print("| | accuracy (%) | mean steps | SOPs / image | wall (s) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| fixed T={T} | {100 * r['fixed_accuracy']:.2f} | {T} | {r['fixed_sops']:.4g} | {r['fixed_wall_seconds']:.2f} |")
    print(f"| early exit | {100 * r['accuracy']:.2f} | {r['mean_steps']:.2f} | {r['sops']:.4g} | {r['wall_seconds']:.2f} |")
    hist = r["steps_histogram"]
    print("steps used: " + ", ".join(f"{t}: {n}" for t, n in hist.items() if n))
    print(f"same prediction as fixed T={T}: {r['same_as_fixed']} / {r['images']}; wall time "
          f"{r['wall_seconds'] / r['fixed_wall_seconds']:.2f}x fixed T (SOPs exclude the first layer's "
          f"{r['first_layer_macs']:.4g} MACs, paid once by both)")
    if args.json:
        write_json(args.json, r)
    return 0


def _cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    from noisesnn_jax.run import config as config_lib
    config = config_lib.load_config(args.config) if args.config else config_lib.get_config()
    config_lib.apply_overrides(config, extra)
    print(config_lib.validate(config))
    return 0


def _cmd_prepare(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise NoiseSNNError(f"prepare takes no config overrides (got {extra[0]!r})")
    from noisesnn_jax.data.prepare import prepare_idx
    path = prepare_idx(args.dataset, args.data_dir, args.source_dir)
    print(f"{args.dataset} is prepared in {path}")
    return 0


def _cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise NoiseSNNError(f"export takes no config overrides (got {extra[0]!r}); it uses the workdir's saved config")
    from noisesnn_jax.run.workdir import export_run
    platforms = tuple(p for p in args.platforms.split(",") if p) if args.platforms else None
    result = export_run(args.workdir, args.format, args.timesteps, args.out, data_dir=args.data_dir,
                        platforms=platforms, log=lambda m: print(m, file=sys.stderr))
    what = (f"{result['nodes']} nodes, {result['edges']} edges" if args.format == "nir"
            else f"input {result['input_shape']}")
    print(f"wrote {result['path']} ({args.format}, {result['bytes']:,} bytes, {what}; T={result['timesteps']}, "
          f"checkpoint step {result['checkpoint_step']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``noisesnn``.

    Returns:
      The parser, with the subcommands ``train``, ``evaluate``, ``export``, ``config`` and
      ``prepare``.
    """
    from noisesnn_jax import __version__
    p = argparse.ArgumentParser(
        prog="noisesnn", description="Train spiking networks at T=1 with noise, run them at T=N.",
        epilog="Config fields: noisesnn config [--config FILE] prints every field with its value; "
               "override any as --config.group.field=value.")
    p.add_argument("--version", action="version", version=f"noisesnn-jax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train at T=1 (resumes if the workdir has a checkpoint)")
    t.add_argument("--config", help="Python config file with get_config() (default: built-in)")
    t.add_argument("--workdir", required=True, help="folder for checkpoints, config and metrics")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_distributed(t)
    e = sub.add_parser("evaluate", help="evaluate a trained workdir at T=1 and converted T=N")
    e.add_argument("--workdir", required=True)
    e.add_argument("--timesteps", type=_parse_timesteps, default=None,
                   help="comma-separated T values (default: the config's eval.timesteps)")
    e.add_argument("--json", help="write the results as JSON here")
    e.add_argument("--plot", help="write accuracy against T as a PNG here")
    e.add_argument("--no-fold-bn", action="store_true", help="do not fold batch norm")
    e.add_argument("--early-exit", metavar="RULE", default=None,
                   help="per-sample early exit up to the largest --timesteps: exact, margin:M or confidence:P "
                        "(optionally ,min=K steps first); reports accuracy, steps used, SOPs and wall time "
                        "against fixed T")
    e.add_argument("--data-dir", default=None,
                   help="where the TFDS dataset lives now (default: the training config's dataset.data_dir)")
    _add_distributed(e)
    x = sub.add_parser("export", help="write a trained workdir's spiking network as a NIR graph or a StableHLO function")
    x.add_argument("--workdir", required=True)
    x.add_argument("--format", required=True, choices=("nir", "stablehlo"))
    x.add_argument("--timesteps", type=int, required=True,
                   help="T: the steps the StableHLO function runs (NIR: recorded in the graph's metadata)")
    x.add_argument("--out", required=True, help="file to write (replaced only once it is complete)")
    x.add_argument("--platforms", default="",
                   help="stablehlo: comma-separated backends to lower for, e.g. cpu,cuda,tpu (default: this one)")
    x.add_argument("--data-dir", default=None,
                   help="where the TFDS dataset lives now (default: the training config's dataset.data_dir)")
    c = sub.add_parser("config", help="print the resolved config (a file, then --config.x=y overrides), validated")
    c.add_argument("--config", help="Python config file with get_config() (default: built-in)")
    r = sub.add_parser("prepare", help="write mnist or fashion_mnist as a TFDS dataset from its four idx files "
                                       "(no network, no TensorFlow)")
    r.add_argument("dataset", choices=("mnist", "fashion_mnist"))
    r.add_argument("--source-dir", default="",
                   help="folder with the four .gz idx files (default for fashion_mnist: where Debian's "
                        "dataset-fashion-mnist package installs them)")
    r.add_argument("--data-dir", default="", help="TFDS data dir (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    return p


def _add_distributed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true",
                   help="multi-process run: call jax.distributed.initialize() (cluster auto-detected)")
    p.add_argument("--coordinator", help="multi-process run: coordinator host:port (with the two below)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--heartbeat-timeout", type=int, default=None,
                   help="multi-process run: seconds without a heartbeat after which a silent process counts as "
                        "dead and the others stop (default: JAX's, 100)")


# How a collective or the coordination service reports that another process of the run is gone.
PEER_LOST = ("connection closed by peer", "connection reset by peer", "heartbeat", "coordination service",
             "gloo all-reduce failed", "gloo all-gather failed", "gloo allgather failed", "gloo allreduce failed",
             "broken pipe")


def _peer_lost(error: BaseException, args: argparse.Namespace) -> bool:
    """True if ``error`` (or an exception it was raised from) says that another process of a
    multi-process run has died. Not only XLA's runtime errors: a collective outside a compiled step
    (``multihost_utils.process_allgather``) reports a dead peer as a ``ValueError``."""
    if not (getattr(args, "distributed", False) or getattr(args, "coordinator", None)):
        return False
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (RuntimeError, ValueError)) and any(k in str(error).lower() for k in PEER_LOST):
            return True
        error = error.__cause__ or error.__context__
    return False


def _exit_peer_lost(args: argparse.Namespace, error: BaseException) -> None:
    """One line, then leave at once: JAX's shutdown would wait in a barrier for the dead process
    until the heartbeat timeout, and then abort. Checkpoints already written are complete (each is
    renamed into place when finished), so re-running every process resumes from the newest one."""
    first = str(error).strip().splitlines()[0][-300:]
    print(f"noisesnn {args.command}: error: another process of this run stopped responding ({first}); this process "
          f"stops too. Its log says why it died. Checkpoints already saved are intact: re-run the command on every "
          f"host to resume from the newest one", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``noisesnn``.

    A user's mistake (a :class:`~noisesnn_jax.errors.NoiseSNNError`, a diverged run) is one line
    on stderr, not a traceback.

    Args:
      argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
      The exit code: 0 on success, 2 for a user's mistake, 1 for a failing write, 143 when a
      signal stopped training (after a checkpoint), 130 on ``KeyboardInterrupt``. A lost peer
      process of a multi-process run exits at once with 3.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "prepare": _cmd_prepare, "config": _cmd_config,
                    "export": _cmd_export}
        return commands[args.command](args, extra)
    except (NoiseSNNError, FloatingPointError) as e:
        print(f"noisesnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a failing write: disk full, permissions, a path through a file
        where = f" ({e.filename})" if e.filename else ""
        print(f"noisesnn {args.command}: error: {e.strerror or e}{where}; free disk space or fix the path and its "
              f"permissions, then re-run (files already written, checkpoints included, are intact)", file=sys.stderr)
        return 1
    except Exception as e:
        from noisesnn_jax.run.train import TrainingInterrupted
        if _peer_lost(e, args):
            _exit_peer_lost(args, e)
        if not isinstance(e, TrainingInterrupted):
            raise
        print(f"noisesnn {args.command}: {e}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"noisesnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
