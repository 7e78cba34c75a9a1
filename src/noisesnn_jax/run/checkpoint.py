"""Checkpoints (orbax): save, restore the newest readable one, refuse a different config,
and reopen a trained workdir (:func:`~noisesnn_jax.run.checkpoint.load_run`)."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import serialization

from noisesnn_jax.contract import SpikingModel, Variables
from noisesnn_jax.data import Dataset, dataset_from_config, default_image_size, steps_per_epoch
from noisesnn_jax.errors import CheckpointError, ConfigError
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.state import TrainState, build_model, learning_rate_schedule, variable_shapes

if TYPE_CHECKING:
    import orbax.checkpoint


# Config groups that define the network and its data: a checkpoint is only resumed or evaluated
# under the same values.
IDENTITY_GROUPS = ("dataset", "model", "neuron", "noise")


# ... except where the data lives and how many threads read it (a resumed pod job may mount it elsewhere).
NOT_IDENTITY = {("dataset", "data_dir"), ("dataset", "workers")}


def open_manager(workdir: str, keep: int = 3, create: bool = True) -> orbax.checkpoint.CheckpointManager:
    """The orbax checkpoint manager of ``workdir/checkpoints``.

    Args:
      workdir: the training workdir.
      keep: the most checkpoints kept (older ones are deleted).
      create: create the folder if missing.

    Returns:
      The manager; close it when done.
    """
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


# how tensorstore and orbax word a failing write (they raise ValueError or RuntimeError, not OSError)
_WRITE_FAILURE = re.compile(r"No space left|File too large|Permission denied|Read-only file system|Disk quota|"
                            r"Failed writing|Failed to write|Error writing")


def save_checkpoint(manager: orbax.checkpoint.CheckpointManager, state: TrainState) -> None:
    """Save ``state`` at its step (blocking until written).

    Orbax writes into a temporary folder and renames it when complete, so a failed or interrupted
    save leaves the previous checkpoints as they were and nothing that looks like a checkpoint.

    Args:
      manager: the workdir's manager (:func:`open_manager`).
      state: the train state.

    Raises:
      OSError: the write failed (disk full, permissions, a file-size limit): one message with the
        step, the reason and the checkpoint folder; the cause is chained.
    """
    import orbax.checkpoint as ocp
    step = int(state.step)
    try:
        manager.save(step, args=ocp.args.StandardSave(serialization.to_state_dict(state)))
        manager.wait_until_finished()
    except Exception as e:
        text = str(e)
        code = re.search(r"os_error_code='?(\d+)", text)
        if not (isinstance(e, OSError) or code or _WRITE_FAILURE.search(text)):
            raise
        number = e.errno if isinstance(e, OSError) and e.errno else int(code.group(1)) if code else errno.EIO
        reason = (e.strerror if isinstance(e, OSError) and e.strerror else os.strerror(number))
        raise OSError(number, f"writing the checkpoint of step {step} failed ({reason}): it is not kept, and the "
                      f"previous checkpoints are intact. {text.splitlines()[0] if text else type(e).__name__}",
                      str(manager.directory)) from e


def restore_checkpoint(manager: orbax.checkpoint.CheckpointManager, state: TrainState,
                       log: Callable[[str], object] = print) -> TrainState | None:
    """Restore the newest readable checkpoint into ``state``'s structure.

    A corrupt or incompatible newest checkpoint is reported and the previous one is tried.

    Args:
      manager: the workdir's manager.
      state: a state of the run's structure (shapes and dtypes).
      log: prints a warning for each unreadable checkpoint.

    Returns:
      The restored state; ``None`` if there is no checkpoint.

    Raises:
      CheckpointError: no checkpoint can be restored into ``state``.
    """
    import orbax.checkpoint as ocp
    target = serialization.to_state_dict(state)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    restored = _restore_newest(manager, lambda: ocp.args.StandardRestore(abstract), log)
    return None if restored is None else serialization.from_state_dict(state, restored)


def restore_variables(manager: orbax.checkpoint.CheckpointManager, abstract: Variables,
                      log: Callable[[str], object] = print) -> tuple[Variables, int] | None:
    """Only the model variables (``params``, ``batch_stats``) of the newest readable checkpoint, and
    its step: evaluation needs no optimizer state.

    Args:
      manager: the workdir's manager.
      abstract: the variables' shapes and dtypes (:func:`noisesnn_jax.run.state.variable_shapes`).
      log: prints a warning for each unreadable checkpoint.

    Returns:
      ``(variables, step)``; ``None`` if there is no checkpoint.

    Raises:
      CheckpointError: no checkpoint can be restored.
    """
    import orbax.checkpoint as ocp
    abstract = {k: v for k, v in abstract.items() if v}  # a model without batch norm has no batch_stats
    target = {**abstract, "step": jax.ShapeDtypeStruct((), jnp.int32)}
    restored = _restore_newest(manager, lambda: ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True), log)
    if restored is None:
        return None
    return {k: restored[k] for k in abstract}, int(restored["step"])


def _restore_newest(manager, make_args, log) -> dict[str, Any] | None:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    errors = []
    for step in steps:
        try:
            return manager.restore(step, args=make_args())
        except Exception as e:  # corrupt files, missing arrays, shape mismatch, ...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            errors.append(f"step {step}: {type(e).__name__}: {msg[:200]}")
            log(f"warning: checkpoint at step {step} is unreadable ({errors[-1]}); trying an older one")
    raise CheckpointError(f"no checkpoint in {manager.directory} can be restored into this run: "
                          f"{'; '.join(errors)}. If the optimizer settings (train.optimizer, schedule, "
                          f"warmup_epochs, weight_decay) changed, set them back; if the files are damaged, "
                          f"train into a new --workdir (the old checkpoints stay where they are)")


def _identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    d = json.loads(json.dumps({g: v for g, v in config.to_dict().items() if g in IDENTITY_GROUPS}))
    data = d.get("dataset", {})
    if not data.get("image_size"):  # 0 means the dataset's own size: compare the size itself
        data["image_size"] = default_image_size(data.get("name", ""))
    return d


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir: str) -> None:
    """Refuse to resume a workdir whose checkpoint came from a different model or dataset.

    Compares the ``dataset``, ``model``, ``neuron`` and ``noise`` groups, except where the data
    lives and how many threads read it.

    Args:
      saved: the workdir's config.
      config: the config of the run that resumes it.
      workdir: the workdir (named in the message).

    Raises:
      CheckpointError: the configs differ (the message names up to four differences).
    """
    a, b = _identity(saved), _identity(config)
    diffs = []
    for g in IDENTITY_GROUPS:
        for k in sorted(set(a.get(g, {})) | set(b.get(g, {}))):
            va, vb = a.get(g, {}).get(k), b.get(g, {}).get(k)
            if va != vb and (g, k) not in NOT_IDENTITY:
                diffs.append(f"{g}.{k}: saved {va!r}, now {vb!r}")
    if diffs:
        raise CheckpointError(f"workdir {workdir!r} holds a run of a different config ("
                              f"{'; '.join(diffs[:4])}); use a new --workdir or the saved config")


SCHEDULE_FIELDS = ("epochs", "batch_size", "learning_rate", "schedule", "warmup_epochs")


def schedule_changes(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, step: int,
                     num_train: int) -> list[str]:
    """Lines that state how a resumed run's learning-rate schedule changed (more epochs, another
    rate): the schedule is rebuilt for the new settings, so the rate at ``step`` jumps.

    Args:
      saved: the workdir's config.
      config: the config of the run that resumes it.
      step: the step it resumes at.
      num_train: the number of training examples.

    Returns:
      One note, or none when the schedule's settings are unchanged.
    """
    changed = [f"train.{k} {saved.train.get(k)!r} -> {config.train.get(k)!r}" for k in SCHEDULE_FIELDS
               if saved.train.get(k) != config.train.get(k)]
    if not changed:
        return []
    rates = []
    for c in (saved, config):
        spe = steps_per_epoch(num_train, c.train.batch_size)
        rates.append(float(learning_rate_schedule(c, spe * c.train.epochs, spe)(step)))
    return [f"note: resuming with {', '.join(changed)}: the learning-rate schedule is rebuilt for the new "
            f"settings, so at step {step} the rate is {rates[1]:.3g} (it was {rates[0]:.3g}); to continue the "
            f"old schedule, resume with the saved values"]


def load_run(workdir: str, log: Callable[[str], object] = print,
             data_dir: str | None = None) -> tuple[ml_collections.ConfigDict, SpikingModel, Variables, Dataset]:
    """Config, model, trained variables and dataset of a training ``workdir``.

    Args:
      workdir: the training workdir.
      log: prints a warning for each unreadable checkpoint.
      data_dir: overrides where a TFDS dataset is read from; ``None`` keeps the config's.

    Returns:
      ``(config, model, variables, dataset)``.

    Raises:
      CheckpointError: no workdir, config or readable checkpoint.
      ConfigError: an invalid saved config.
      DataError: the dataset cannot be loaded.
    """
    config, model, variables, ds, _ = restore_run(workdir, log, data_dir)
    return config, model, variables, ds


def restore_run(workdir: str, log: Callable[[str], object] = print, data_dir: str | None = None
                ) -> tuple[ml_collections.ConfigDict, SpikingModel, Variables, Dataset, int]:
    """:func:`load_run` and the step of the checkpoint it restored.

    Args:
      workdir: the training workdir.
      log: prints a warning for each unreadable checkpoint.
      data_dir: overrides where a TFDS dataset is read from; ``None`` keeps the config's.

    Returns:
      ``(config, model, variables, dataset, step)``.

    Raises:
      CheckpointError: no workdir, config or readable checkpoint.
      ConfigError: an invalid saved config.
      DataError: the dataset cannot be loaded.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir!r} does not exist; train first with "
                              f"noisesnn train --workdir {workdir}")
    if not os.path.exists(cfg_path):
        raise CheckpointError(f"workdir {workdir!r} has no config.json; it is not a training "
                              f"workdir (train first with noisesnn train --workdir {workdir})")
    try:
        with open(cfg_path) as f:
            config = config_lib.validate(config_lib.from_json(f.read()))
    except ConfigError:
        raise
    except Exception as e:
        raise CheckpointError(f"{cfg_path} is corrupt ({type(e).__name__}); retrain into a new workdir") from None
    if data_dir:
        config.dataset.data_dir = data_dir
    ds = dataset_from_config(config)
    model = build_model(config, ds.num_classes)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise CheckpointError(f"workdir {workdir!r} has no checkpoint; train first with "
                              f"noisesnn train --workdir {workdir}")
    abstract = variable_shapes(model, ds.input_shape)
    manager = open_manager(workdir, config.train.keep_checkpoints, create=False)
    restored = restore_variables(manager, abstract, log)
    manager.close()
    if restored is None:
        raise CheckpointError(f"workdir {workdir!r} has no checkpoint; train first with "
                              f"noisesnn train --workdir {workdir}")
    variables, step = restored
    return config, model, variables, ds, step

