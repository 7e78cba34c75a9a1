"""Training: a pure, jitted ``train_step``, the loop, orbax checkpoints, JSON-lines metrics.

The noise of step ``k`` is drawn from ``fold_in(noise_key, k)`` and its batch is a function of
``(seed, k)`` only, so a run resumed from a checkpoint at step ``k`` continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from noisesnn_jax import parallel
from noisesnn_jax.contract import Array
from noisesnn_jax.data import Dataset, dataset_from_config, steps_per_epoch
from noisesnn_jax.errors import CheckpointError, ConfigError
from noisesnn_jax.evaluate import evaluate_dataset
from noisesnn_jax.interop.export import write_atomic
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.checkpoint import check_compatible, open_manager, restore_checkpoint, save_checkpoint, schedule_changes
from noisesnn_jax.run.state import TrainState, build_model, create_state, make_optimizer, variables_of


def loss_and_metrics(logits: Array, labels: Array, num_classes: int,
                     label_smoothing: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """Mean softmax cross-entropy (optionally label-smoothed) and accuracy.

    Args:
      logits: ``[B, K]``.
      labels: integer labels ``[B]``.
      num_classes: ``K``.
      label_smoothing: the label-smoothing factor (0: one-hot targets).

    Returns:
      ``(loss, {"loss": loss, "accuracy": accuracy})``, scalars.
    """
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"loss": loss, "accuracy": acc}


def train_step(state: TrainState, images: Array, labels: Array, noise_key: Array, *,
               num_classes: int, label_smoothing: float = 0.0,
               timesteps: int = 1) -> tuple[TrainState, dict[str, Array]]:
    """One step: noise from ``fold_in(noise_key, state.step)``, loss, gradients, update.

    Args:
      state: the train state (its ``apply_fn`` follows the model contract).
      images: the batch ``[B, ...]``.
      labels: integer labels ``[B]``.
      noise_key: the run's noise key; step ``k`` draws from ``fold_in(noise_key, k)``.
      num_classes: ``K``.
      label_smoothing: the label-smoothing factor.
      timesteps: 1 is this library's T=1 noisy training; ``T > 1`` is spike-based
        backpropagation through time (the BPTT baseline) with the neurons' surrogate gradient.

    Returns:
      ``(new_state, {"loss", "accuracy"})``; the batch statistics are updated too.
    """
    key = jax.random.fold_in(noise_key, state.step)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            timesteps=timesteps, rngs={"noise": key}, mutable=["batch_stats"])
        loss, metrics = loss_and_metrics(logits, labels, num_classes, label_smoothing)
        return loss, (metrics, updates)

    grads, (metrics, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    return state, metrics


@jax.jit
def _all_finite(tree: Any) -> Array:
    """Whether every element of every array of ``tree`` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def _write_jsonl(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` whole or not at all: a failing write (disk full) cuts the
    file back to its previous end, so no half line is left for the next append to run into."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(line):  # a short write is followed by the one that fails
                done += os.write(fd, line[done:])
        except OSError as e:
            os.ftruncate(fd, end)
            raise OSError(e.errno, e.strerror or str(e), path) from e
    finally:
        os.close(fd)


def _init_from(state: TrainState, model: Any, input_shape: tuple[int, ...], source: str, log) -> TrainState:
    """``state`` with the params and batch_stats of the newest checkpoint of workdir ``source``."""
    from noisesnn_jax.run.checkpoint import restore_variables
    from noisesnn_jax.run.state import variable_shapes

    if not os.path.isdir(os.path.join(source, "checkpoints")):
        raise ConfigError(f"config.train.init_from={source!r} has no checkpoints; give a trained workdir")
    manager = open_manager(source, create=False)
    try:
        restored = restore_variables(manager, variable_shapes(model, input_shape), lambda m: None)
    except CheckpointError:
        raise ConfigError(f"config.train.init_from={source!r} holds a different model (its variables do not fit "
                          f"this config's model); fine-tune from a run of the same model") from None
    finally:
        manager.close()
    if restored is None:
        raise ConfigError(f"config.train.init_from={source!r} has no checkpoints; give a trained workdir")
    variables, step = restored
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), {"params": state.params})
    got = jax.tree_util.tree_map(lambda a: tuple(a.shape), {"params": variables["params"]})
    if want != got:
        raise ConfigError(f"config.train.init_from={source!r} holds a different model (its variables do not fit "
                          f"this config's model); fine-tune from a run of the same model")
    log(f"initialized from {source} (step {step}): params and batch statistics; the optimizer starts afresh")
    return state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", state.batch_stats))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool = True,
                       log: Callable[[str], object] = print, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train at T=1 per ``config`` into ``workdir`` (resuming if it holds a checkpoint).

    Writes ``config.json``, ``checkpoints/`` and ``metrics.jsonl`` (one JSON line per epoch).
    Each epoch ends with the T=1 accuracy on the evaluation split. SIGTERM or SIGINT saves a
    checkpoint and stops.

    Args:
      config: the run's config (validated here).
      workdir: the folder of the run (created if missing).
      progress: show a progress bar per epoch (process 0).
      log: prints the run's lines (process 0 only).
      stop_at_step: end the run early at that global step, with a checkpoint (a planned
        interruption; re-running continues it); ``None`` trains every epoch.

    Returns:
      The last finished epoch's metrics (``epoch``, ``step``, ``train_loss``,
      ``train_accuracy``, ``test_accuracy_t1``, ``epoch_seconds``, ``steps``); ``{}`` if no
      epoch finished in this call.

    Raises:
      ConfigError: an invalid config, or ``workdir`` in use by another live training run.
      CheckpointError: the workdir holds a run of another config, or unreadable checkpoints.
      DataError: the dataset cannot be loaded.
      FloatingPointError: the loss or the parameters became non-finite; no checkpoint of them is
        written, so re-running (with a lower learning rate) resumes from the last finite one.
      TrainingInterrupted: a signal stopped the run after a checkpoint was saved.
    """
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, progress, log, stop_at_step)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Hold ``<workdir>/train.lock`` (an exclusive ``flock``, process 0 only) while a run trains.

    A second run on the same workdir is refused. The kernel drops the lock when its holder dies,
    so a killed run never keeps it.

    Args:
      workdir: the run's folder (it must exist).

    Yields:
      Nothing: the lock is held while the context is active.

    Raises:
      ConfigError: another live run holds the lock.
    """
    if jax.process_index() != 0:
        yield
        return
    import fcntl

    path = os.path.join(workdir, "train.lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"workdir {workdir!r} is in use by another training run ({holder}); wait for it to "
                              f"finish, stop it, or pass another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool, log,
                        stop_at_step: int | None) -> dict[str, Any]:
    saved = _saved_config(config, workdir)
    ds = _checked_dataset(config)
    t = config.train
    spe = steps_per_epoch(ds.num_train, t.batch_size)
    total = spe * t.epochs
    model = build_model(config, ds.num_classes)
    tx = make_optimizer(config, total, spe)
    root = jax.random.key(config.seed)
    init_key, noise_key = jax.random.split(root)
    state = create_state(model, tx, ds.input_shape, init_key)
    manager = open_manager(workdir, t.keep_checkpoints)
    setup = _Setup(config, workdir, ds, model, spe, log)
    state = _starting_state(setup, saved, state, manager)
    main_process = jax.process_index() == 0
    if main_process:  # replaced whole or not at all: a resumed run needs it
        text = config_lib.to_json(config)

        def dump(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)

        write_atomic(os.path.join(workdir, "config.json"), dump)
    else:
        log = lambda *a, **k: None  # noqa: E731 - logs and metrics from process 0 only
        setup = dataclasses.replace(setup, log=log)
        progress = False
    timesteps = t.timesteps if config.method == "bptt" else 1
    state, step_fn, rows, to_device, mesh = _placement(config, ds, state, timesteps, log)
    _log_start(setup, state, timesteps, total)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        progress, tqdm = False, None
    final = total if stop_at_step is None else min(total, int(stop_at_step))
    writer = tensorboard_writer(workdir) if t.get("tensorboard", False) and main_process else None
    loop = _Loop(config=config, ds=ds, model=model, step_fn=step_fn, rows=rows, to_device=to_device, mesh=mesh,
                 noise_key=noise_key, manager=manager, steps_per_epoch=spe,
                 checkpoint_every=t.checkpoint_every_steps or spe,
                 metrics_path=os.path.join(workdir, "metrics.jsonl") if main_process else None,
                 log=log, tqdm=tqdm if progress else None, writer=writer)
    try:
        last = loop.run(state, final)
    finally:
        loop.stop.restore()
        if writer is not None:
            writer.close()
    manager.close()
    return last


def _saved_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict | None:
    """The config of the run ``workdir`` holds, checked against ``config``; ``None`` for a new run."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        return None
    try:
        with open(cfg_path) as f:
            saved = config_lib.from_json(f.read())
    except Exception as e:
        raise CheckpointError(f"{cfg_path} is unreadable ({type(e).__name__}); "
                              f"use a new --workdir") from None
    check_compatible(saved, config, workdir)
    return saved


def _checked_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """The run's dataset, checked against its model and batch size."""
    ds = dataset_from_config(config)
    if config.model.name != "mlp" and not ds.is_image:
        raise ConfigError(f"model {config.model.name!r} needs images [N, H, W, C] but dataset "
                          f"{ds.name!r} has flat features {ds.input_shape}; use --config.model.name=mlp")
    t = config.train
    if t.batch_size > ds.num_train:
        raise ConfigError(f"config.train.batch_size={t.batch_size} exceeds the {ds.num_train} "
                          f"training examples; use a smaller batch size")
    return ds


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What the run's start shares: its config, workdir, dataset, model, steps per epoch and log."""

    config: ml_collections.ConfigDict
    workdir: str
    ds: Dataset
    model: Any
    steps_per_epoch: int
    log: Callable[[str], None]


def _starting_state(run: _Setup, saved: ml_collections.ConfigDict | None, state: TrainState,
                    manager: Any) -> TrainState:
    """The state the run continues from: the workdir's latest checkpoint, else ``train.init_from``'s
    variables, else the fresh ``state``."""
    t, log = run.config.train, run.log
    restored = restore_checkpoint(manager, state, log)
    if restored is None and t.get("init_from"):
        state = _init_from(state, run.model, run.ds.input_shape, t.init_from, log)
    if restored is not None:
        state = restored
        log(f"resumed from step {int(state.step)} in {run.workdir}")
        if saved is not None:
            for line in schedule_changes(saved, run.config, int(state.step), run.ds.num_train):
                log(line)
    return state


def _placement(config: ml_collections.ConfigDict, ds: Dataset, state: TrainState, timesteps: int,
               log) -> tuple[TrainState, Callable, slice, Callable, Any]:
    """The jitted step and where its data lives: ``(state, step_fn, rows, to_device, mesh)``,
    data parallel over the mesh when it has several devices."""
    t = config.train
    step_impl = functools.partial(train_step, num_classes=ds.num_classes,
                                  label_smoothing=t.label_smoothing, timesteps=timesteps)
    mesh = parallel.make_mesh()
    if mesh.devices.size > 1:
        try:
            parallel.check_divisible(t.batch_size, mesh)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        state = parallel.replicate(mesh, state)
        step_fn = parallel.shard_train_step(mesh, step_impl)
        rows = parallel.process_slice(t.batch_size)
        to_device = lambda a: parallel.global_batch(mesh, a)  # noqa: E731
        log(f"data parallel over {mesh.devices.size} devices ({jax.process_count()} processes)")
    else:
        step_fn = jax.jit(step_impl, donate_argnums=0)
        to_device = jnp.asarray
        rows = slice(None)
    return state, step_fn, rows, to_device, mesh


def _log_start(run: _Setup, state: TrainState, timesteps: int, total: int) -> None:
    """The run's first line: method, model, dataset, devices, batch and steps."""
    config, ds, model, t, spe = run.config, run.ds, run.model, run.config.train, run.steps_per_epoch
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(state.params))
    run.log(f"{config.method} training of {config.model.name} ({model.activation}, {n_params:,} parameters"
        f"{f', BPTT over T={timesteps}' if timesteps > 1 else ''}) on {ds.name} ({ds.num_train:,} train / "
        f"{ds.num_test:,} {_split(config)}, input {list(ds.input_shape)}); {jax.device_count()} {jax.default_backend()} "
        f"device(s) in {jax.process_count()} process(es), global batch {t.batch_size}, {spe} steps per epoch, "
        f"{t.epochs} epochs ({total} steps), from step {int(state.step)}")


def tensorboard_writer(workdir: str):
    """A TensorBoard event-file writer in ``<workdir>/tensorboard`` (tensorboardX: no TensorFlow).

    Args:
      workdir: the run's folder.

    Returns:
      The writer; close it when done.

    Raises:
      ConfigError: tensorboardX is not installed.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("config.train.tensorboard=True needs tensorboardX (it writes TensorBoard event files "
                          "without TensorFlow): pip install 'noisesnn-jax[tensorboard]', or set it False") from None
    return SummaryWriter(os.path.join(workdir, "tensorboard"))


class _StopOnSignal:
    """SIGTERM (preemption) and SIGINT set a flag; the loop saves a checkpoint and returns."""

    def __init__(self) -> None:
        import signal
        import threading
        self.requested = None
        self.stopping = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = signum

    def agreed(self, sync_point: bool) -> bool:
        """Whether to stop now. One process: as soon as a signal came. Several: only at sync
        points (every 10 steps and at epoch ends), and all together when any of them got one,
        so that no process waits in a collective for one that has left."""
        if jax.process_count() == 1:
            self.stopping = self.requested is not None
        elif sync_point:
            from jax.experimental import multihost_utils
            flags = multihost_utils.process_allgather(np.int32(self.requested is not None))
            self.stopping = bool(np.any(flags))
        return self.stopping

    def restore(self) -> None:
        import signal
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class _Loop:
    """What the training loop of :func:`train_and_evaluate` runs with."""

    config: ml_collections.ConfigDict
    ds: Dataset
    model: Any
    step_fn: Callable  # (state, images, labels, noise_key) -> (state, metrics), jitted
    rows: slice  # this process's rows of each global batch
    to_device: Callable  # host batch -> device (global) array
    mesh: Any
    noise_key: Array
    manager: Any  # orbax CheckpointManager
    steps_per_epoch: int
    checkpoint_every: int
    metrics_path: str | None  # None on processes other than 0
    log: Callable[[str], None]
    tqdm: Any  # the progress-bar class, or None
    writer: Any = None  # a TensorBoard SummaryWriter, or None
    stop: _StopOnSignal = dataclasses.field(default_factory=_StopOnSignal)
    # set by run(): the step it runs to, and its first step with that step's time (rate and ETA)
    final: int = dataclasses.field(default=0, init=False)
    clock: tuple[int, float] = dataclasses.field(default=(0, 0.0), init=False)

    def save(self, state: TrainState, sums: Any) -> None:
        """Checkpoint ``state`` unless its parameters, or a loss since the epoch began, are not finite:
        a diverged state is never saved, so the last checkpoint stays the last finite one."""
        if not bool(_all_finite(state.params)) or (sums is not None and not np.isfinite(float(sums["loss"]))):
            kept = self.manager.latest_step()
            raise FloatingPointError(
                f"training diverged by step {int(state.step)} (non-finite loss or parameters); not saved. "
                f"{'The last checkpoint, step ' + str(kept) + ', is kept: re-run' if kept is not None else 'Re-run'}"
                f" with a lower --config.train.learning_rate (now {self.config.train.learning_rate}) to continue")
        save_checkpoint(self.manager, state)

    def run(self, state: TrainState, final: int) -> dict[str, Any]:
        """Steps from ``state.step`` to ``final``: epochs, checkpoints, metrics; the last epoch's metrics."""
        step, spe = int(state.step), self.steps_per_epoch
        last: dict[str, Any] = {}
        self.final, self.clock = final, (step, time.perf_counter())
        while step < final:
            epoch = step // spe
            end = min((epoch + 1) * spe, final)
            bar = self.tqdm(total=spe, initial=step - epoch * spe, desc=f"epoch {epoch + 1}/{self.config.train.epochs}",
                            leave=False, disable=None, file=sys.stderr) if self.tqdm else _NoBar()
            t0 = time.perf_counter()
            state, step, sums, count = self._epoch_steps(state, step, end, epoch, bar)
            bar.close()
            seconds = time.perf_counter() - t0
            self.save(state, sums)
            if self.stop.stopping:
                self.log(f"signal {self.stop.requested or 'on another process'} received: saved a checkpoint at "
                         f"step {step}; re-run to continue")
                raise TrainingInterrupted(step)
            if step % spe:  # stopped inside an epoch: no epoch summary
                self.log(f"stopped at step {step} (epoch {epoch + 1} unfinished); re-run to continue")
                break
            last = self._end_epoch(state, epoch, step, sums, count, seconds)
        return last

    def _epoch_steps(self, state: TrainState, step: int, end: int, epoch: int,
                     bar: Any) -> tuple[TrainState, int, Any, int]:
        """Steps of epoch ``epoch`` from ``step`` to ``end``, or until a signal stops them:
        ``(state, step, sums, count)``, the metrics summed on the device over ``count`` steps."""
        config, t = self.config, self.config.train
        sums = None  # metrics summed on the device over every step of the epoch
        count = 0
        while step < end:
            xb, yb = self.ds.train_batch(t.batch_size, config.seed, step, self.rows)  # this process's rows
            state, m = self.step_fn(state, self.to_device(xb), self.to_device(yb), self.noise_key)
            sums = m if sums is None else jax.tree_util.tree_map(jnp.add, sums, m)
            step += 1
            count += 1
            if count % 10 == 0 or step == end:  # read back every 10 steps, not every step
                loss = float(jax.device_get(m["loss"]))
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged at step {step} (loss {loss}); lower "
                        f"--config.train.learning_rate (now {t.learning_rate})")
            if t.log_every_steps and step % t.log_every_steps == 0:
                self._log_step(step, epoch, sums, count)
            bar.update(1)
            if self.stop.agreed(sync_point=count % 10 == 0 or step == end):
                break
            if step % self.checkpoint_every == 0 and step != end:
                self.save(state, sums)
        return state, step, sums, count

    def _log_step(self, step: int, epoch: int, sums: Any, count: int) -> None:
        """The line (and TensorBoard scalars) of ``train.log_every_steps``: the epoch's mean loss so far."""
        first_step, started = self.clock
        final = self.final
        rate = (step - first_step) / max(time.perf_counter() - started, 1e-9)
        mean = jax.device_get(sums)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", float(mean["loss"]) / count, step)
            self.writer.add_scalar("train/steps_per_second", rate, step)
        self.log(f"step {step}/{final} (epoch {epoch + 1})  loss {float(mean['loss']) / count:.4f}  "
                 f"train acc {float(mean['accuracy']) / count:.4f}  {rate:.2f} steps/s  "
                 f"ETA {_duration((final - step) / max(rate, 1e-9))}")

    def _end_epoch(self, state: TrainState, epoch: int, step: int, sums: Any, count: int,
                   seconds: float) -> dict[str, Any]:
        """Evaluate at T=1 after epoch ``epoch`` (it ends at ``step``); record and log its metrics."""
        config = self.config
        ev = evaluate_dataset(self.model, variables_of(state), self.ds, 1, batch_size=config.eval.batch_size,
                              mesh=self.mesh)
        sums = jax.device_get(sums)
        last = {"epoch": epoch + 1, "step": step, "train_loss": float(sums["loss"]) / count,
                "train_accuracy": float(sums["accuracy"]) / count, "test_accuracy_t1": ev["accuracy"],
                "epoch_seconds": round(seconds, 3), "steps": count}
        if self.metrics_path:
            _write_jsonl(self.metrics_path, last)
        if self.writer is not None:
            for key in ("train_loss", "train_accuracy", "test_accuracy_t1", "epoch_seconds"):
                self.writer.add_scalar(f"epoch/{key}", last[key], step)
            self.writer.flush()
        self.log(f"epoch {epoch + 1:3d}/{config.train.epochs}  loss {last['train_loss']:.4f}  "
                 f"train acc {last['train_accuracy']:.4f}  {_split(config)} acc (T=1) {ev['accuracy']:.4f}  "
                 f"{seconds:.1f}s")
        return last


def _split(config: ml_collections.ConfigDict) -> str:
    """The name of the evaluation split: held-out training examples, or the test split."""
    return "validation" if config.dataset.get("validation", 0) else "test"


def _duration(seconds: float) -> str:
    """``3725 -> '1h02m'``, ``75 -> '1m15s'``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint at ``step``.

    Args:
      step: the global step of the saved checkpoint.

    Attributes:
      step: the global step of the saved checkpoint.
    """

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}; a checkpoint was saved, re-run to continue")
        self.step = step

