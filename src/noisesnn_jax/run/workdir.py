"""A training workdir as a whole: evaluate it, run it with early exit, export it.

These helpers read a workdir's config and checkpoint (:func:`noisesnn_jax.run.checkpoint.restore_run`)
and hand the trained network to the inference core (:mod:`noisesnn_jax.evaluate`,
:mod:`noisesnn_jax.early_exit`, :mod:`noisesnn_jax.interop`); the ``noisesnn`` command calls them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from noisesnn_jax import baselines, parallel
from noisesnn_jax.contract import SpikingModel, Variables
from noisesnn_jax.convert import fold_batchnorm
from noisesnn_jax.early_exit import ExitRule, evaluate_early_exit
from noisesnn_jax.errors import ExportError
from noisesnn_jax.evaluate import evaluate_dataset
from noisesnn_jax.interop import export
from noisesnn_jax.ops import count_ops
from noisesnn_jax.run.checkpoint import restore_run

if TYPE_CHECKING:
    import ml_collections

    from noisesnn_jax.data import Dataset

# The methods that train an ANN and deploy it converted to the spiking network.
ANN_METHODS = ("convert", "qcfs", "clip")
# Pixels x images x time steps of the operation count's probe (100 images of 32x32 at T <= 80).
OPS_PROBE_BUDGET = 8192 * 1024


def evaluate_run(workdir: str, timesteps: tuple[int, ...] | None = None, fold_bn: bool = True,
                 log: Callable[[str], object] = print, data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a trained workdir: T=1 (noise at its mean and sampled) and converted at each T.

    Over every device when there are several (the batch sharded on a ``data`` mesh axis; in a
    multi-process run every process calls this and loads only its rows). A baseline ANN is
    converted first (:func:`spiking_network`) and its own accuracy reported too.

    Args:
      workdir: the training workdir.
      timesteps: the ``T`` to evaluate; ``None`` takes the config's ``eval.timesteps``.
      fold_bn: fold batch norm for the multi-step runs.
      log: prints a line per ``T``.
      data_dir: overrides where a TFDS dataset is read from.

    Returns:
      A JSON-serializable report: ``dataset``, ``model``, ``method``, ``activation``, ``noise``,
      ``num_test``, ``timesteps``, ``accuracy`` (one per ``T``), ``t1_accuracy``,
      ``t1_noisy_accuracy``, ``firing_rates`` and ``ops`` (per ``T``), ``bn_folded``,
      ``workdir``, ``provenance``, and for the baselines ``ann_accuracy`` (and ``thresholds``).

    Raises:
      CheckpointError: no workdir, config or readable checkpoint.
      ConfigError: an invalid saved config.
      DataError: the dataset cannot be loaded.
      ValueError: batch norm that cannot be folded (with ``fold_bn``).
    """
    config, model, variables, ds, step = restore_run(workdir, log, data_dir)
    mesh = parallel.make_mesh() if jax.device_count() > 1 else None
    bs = config.eval.batch_size
    run_eval = lambda m, v, T, **kw: evaluate_dataset(m, v, ds, T, batch_size=bs, mesh=mesh, **kw)  # noqa: E731
    timesteps = tuple(timesteps or config.eval.timesteps)
    extra: dict[str, Any] = {}
    if config.method in ANN_METHODS:
        extra["ann_accuracy"] = run_eval(model, variables, 1)["accuracy"]
    model, variables, converted = spiking_network(config, model, variables, ds)
    extra.update(converted)
    t1 = run_eval(model, variables, 1)
    spiking = model.activation == "spike"
    t1_noisy = t1
    if spiking and model.noise.kind != "none":
        t1_noisy = run_eval(model, variables, 1, sample_noise_key=jax.random.key(config.seed + 1))
    example = ds.test_examples(np.arange(1))[0]
    eval_model, eval_vars = (fold_batchnorm(model, variables, example) if fold_bn
                             else (model, variables))
    accuracy, rates, ops = [], {}, {}
    pixels = max(1024, int(np.prod(ds.input_shape[:-1])))
    probe_size = max(1, min(100, ds.num_test, OPS_PROBE_BUDGET // (min(timesteps) * pixels)))
    probe = ds.test_examples(np.arange(probe_size))[0] if spiking else None
    for T in timesteps:
        t0 = time.perf_counter()
        r = run_eval(eval_model, eval_vars, T)
        log(f"T={T}: accuracy {100 * r['accuracy']:.2f}% on {ds.num_test} test images "
            f"({time.perf_counter() - t0:.1f}s)")
        accuracy.append(r["accuracy"])
        rates[str(T)] = r["firing_rates"]
        if spiking:  # on at most 100 test images, fewer for large images and T (it runs unjitted)
            rows = max(1, min(len(probe), OPS_PROBE_BUDGET // (T * pixels)))
            ops[str(T)] = count_ops(eval_model, eval_vars, probe[:rows], T)
    return {
        "dataset": config.dataset.name, "model": config.model.name, "method": config.method,
        "activation": model.activation, "noise": config.noise.to_dict(),
        "num_test": int(ds.num_test), "timesteps": list(timesteps), "accuracy": accuracy,
        "t1_accuracy": t1["accuracy"], "t1_noisy_accuracy": t1_noisy["accuracy"],
        "firing_rates": rates, "ops": ops, "bn_folded": bool(fold_bn), "workdir": workdir, **extra,
        "provenance": provenance(step),
    }


def spiking_network(config: ml_collections.ConfigDict, model: SpikingModel, variables: Variables,
                    ds: Dataset) -> tuple[SpikingModel, Variables, dict[str, Any]]:
    """The spiking network of a trained run.

    The model itself, or for the ``convert``, ``qcfs`` and ``clip`` baselines the ANN converted
    (:func:`noisesnn_jax.baselines.ann_to_snn`; ``convert`` sets its thresholds from training
    batches).

    Args:
      config: the run's config.
      model: its trained model.
      variables: its variables.
      ds: its dataset (``convert`` reads ``convert.num_batches`` training batches).

    Returns:
      ``(model, variables, extra)``; ``extra`` holds ``"thresholds"`` where ``convert`` set them.
    """
    if config.method not in ANN_METHODS:
        return model, variables, {}
    extra: dict[str, Any] = {}
    thresholds = None
    if config.method == "convert":
        batches = [ds.train_batch(config.train.batch_size, config.seed, i)[0] for i in range(config.convert.num_batches)]
        thresholds = baselines.activation_statistics(model, variables, batches, config.convert.percentile)
        extra["thresholds"] = thresholds
    v_init = config.convert.v_init if config.method == "convert" else 0.5  # QCFS and clip: theta/2
    model, variables = baselines.ann_to_snn(model, variables, thresholds, v_init)
    return model, variables, extra


def early_exit_run(workdir: str, rule: ExitRule, max_timesteps: int | None = None, *, data_dir: str | None = None,
                   log: Callable[[str], object] = print) -> dict[str, Any]:
    """Per-sample early exit (:mod:`noisesnn_jax.early_exit`) of a trained workdir's folded spiking
    network over its test split, against the fixed ``max_timesteps`` run.

    Args:
      workdir: the training workdir.
      rule: when a sample stops.
      max_timesteps: ``T`` of the fixed run; ``None`` takes the config's largest
        ``eval.timesteps``.
      data_dir: overrides where a TFDS dataset is read from.
      log: prints warnings while the checkpoint is restored.

    Returns:
      :func:`noisesnn_jax.early_exit.evaluate_early_exit`'s report with ``dataset``, ``model``,
      ``workdir`` and ``provenance``.

    Raises:
      CheckpointError: no workdir, config or readable checkpoint.
      ConfigError: an invalid saved config or ``max_timesteps``.
      DataError: the dataset cannot be loaded.
      ExportError: the exact rule on a network whose readout bound cannot be found.
      ValueError: batch norm that cannot be folded.
    """
    config, model, variables, ds, step = restore_run(workdir, log, data_dir)
    model, variables, _ = spiking_network(config, model, variables, ds)
    x, y = ds.test_examples(np.arange(ds.num_test))
    model, variables = fold_batchnorm(model, variables, x[:8])
    T = int(max_timesteps or max(config.eval.timesteps))
    result = evaluate_early_exit(model, variables, x, y, T, rule, batch_size=config.eval.batch_size)
    return {"dataset": config.dataset.name, "model": config.model.name, "workdir": workdir, **result,
            "provenance": provenance(step)}


def export_run(workdir: str, fmt: str, timesteps: int, out: str, *, data_dir: str | None = None,
               platforms: Sequence[str] | None = None, log: Callable[[str], object] = print) -> dict[str, Any]:
    """Export the spiking network of a training workdir (the latest checkpoint) to ``out``.

    The ``convert``, ``qcfs`` and ``clip`` baselines are converted to their spiking network
    first. Nothing is written when an error is raised.

    Args:
      workdir: the training workdir.
      fmt: ``nir`` (the graph, with ``timesteps`` in its metadata) or ``stablehlo`` (the
        inference function at ``timesteps``).
      timesteps: ``T``.
      out: the file to write (replaced only once it is complete).
      data_dir: overrides where a TFDS dataset is read from.
      platforms: ``stablehlo``: the backends to lower for; ``None``: the current one.
      log: prints warnings while the checkpoint is restored.

    Returns:
      What was written: ``format``, ``path``, ``bytes``, ``timesteps``, ``checkpoint_step``,
      ``model``, ``dataset``, and ``nodes``/``edges`` (NIR) or ``input_shape`` (StableHLO).

    Raises:
      ExportError: an unknown format, invalid ``timesteps``, a network that cannot be expressed
        (the layer named), or a missing optional package (``nir``, ``flatbuffers``).
      CheckpointError: no workdir, config or readable checkpoint.
      ConfigError: an invalid saved config.
      DataError: the dataset cannot be loaded.
      TypeError: ``stablehlo`` of a model that does not follow the model contract.
    """
    from noisesnn_jax.interop import nir as nir_lib

    if fmt not in export.FORMATS:
        raise ExportError(f"format {fmt!r} is unknown; choose one of {list(export.FORMATS)}")
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ExportError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
    config, model, variables, ds, step = restore_run(workdir, log, data_dir)
    model, variables, _ = spiking_network(config, model, variables, ds)
    example = np.asarray(ds.test_examples(np.arange(min(8, ds.num_test)))[0], np.float32)
    if fmt == "nir":
        graph = nir_lib.to_nir(model, variables, example, timesteps=timesteps)
        size = nir_lib.write(graph, out)
        detail = {"nodes": len(graph.nodes), "edges": len(graph.edges)}
    else:
        data = export.serialize(export.stablehlo(model, variables, example, timesteps, platforms=platforms))

        def dump(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        size = export.write_atomic(out, dump)
        detail = {"input_shape": ["b", *example.shape[1:]]}
    return {"format": fmt, "path": out, "bytes": size, "timesteps": timesteps, "checkpoint_step": int(step),
            "model": config.model.name, "dataset": config.dataset.name, **detail}


def provenance(step: int) -> dict[str, Any]:
    """What produced a result: the checkpoint step, versions, backend, date.

    Args:
      step: the checkpoint's step.

    Returns:
      ``checkpoint_step``, ``noisesnn_jax`` and ``jax`` versions, ``backend``, ``devices`` and
      the UTC ``date``.
    """
    import datetime

    from noisesnn_jax import __version__
    return {"checkpoint_step": int(step), "noisesnn_jax": __version__, "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

