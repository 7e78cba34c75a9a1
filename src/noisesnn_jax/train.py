"""Training: a pure, jitted ``train_step``, the loop, orbax checkpoints, JSON-lines metrics.

The noise of step ``k`` is drawn from ``fold_in(noise_key, k)`` and its batch is a function of
``(seed, k)`` only, so a run resumed from a checkpoint at step ``k`` continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization
from flax.training import train_state

from noisesnn_jax import config as config_lib
from noisesnn_jax import convert, parallel
from noisesnn_jax.data import Dataset, dataset_from_config, default_image_size, steps_per_epoch
from noisesnn_jax.errors import CheckpointError, ConfigError
from noisesnn_jax.models import MODELS
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise

Array = jax.Array
# Config groups that define the network and its data: a checkpoint is only resumed or evaluated
# under the same values.
IDENTITY_GROUPS = ("dataset", "model", "neuron", "noise")
# ... except where the data lives and how many threads read it (a resumed pod job may mount it elsewhere).
NOT_IDENTITY = {("dataset", "data_dir"), ("dataset", "workers")}
# Pixels x images x time steps of the operation count's probe (100 images of 32x32 at T <= 80).
OPS_PROBE_BUDGET = 8192 * 1024


class TrainState(train_state.TrainState):
    """Optax train state plus batch-norm statistics."""

    batch_stats: Any = None


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> Any:
    """The Flax model that ``config.model``, ``config.neuron`` and ``config.noise`` describe."""
    m, n, z = config.model, config.neuron, config.noise
    try:
        neuron = Neuron(threshold=float(n.threshold), tau=None if not n.tau else float(n.tau),
                        reset=n.reset, surrogate=n.surrogate, alpha=float(n.alpha) or None)
        noise = Noise(kind=z.kind, mean=float(z.mean), std=float(z.std),
                      sampler=z.get("sampler", "reparam"))
    except ValueError as e:
        raise ConfigError(f"invalid neuron or noise config: {e}") from None
    activation = {"convert": "relu", "qcfs": "qcfs"}.get(config.get("method", "noisy"), m.activation)
    common = dict(num_classes=num_classes, activation=activation, neuron=neuron, noise=noise,
                  learn_threshold=m.learn_threshold, learn_std=m.learn_std,
                  batch_norm=m.batch_norm, remat=bool(config.train.get("remat", False)),
                  qcfs_levels=int(m.get("qcfs_levels", 4)))
    common["dtype"] = jnp.bfloat16 if m.get("dtype", "float32") == "bfloat16" else jnp.float32
    if m.name == "mlp":
        return MODELS["mlp"](hidden=tuple(m.hidden), **common)
    if m.name == "cnn":
        return MODELS["cnn"](channels=tuple(m.channels), pool_after=tuple(m.pool_after), pool=m.pool,
                             **common)
    if m.name.startswith("resnet"):
        return MODELS[m.name](stem=m.get("stem", "cifar"), **common)
    return MODELS[m.name](pool=m.pool, **common)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int = 0) -> optax.Schedule:
    """``step -> learning rate``: a linear warm-up from 0 over ``train.warmup_epochs`` epochs of
    ``steps_per_epoch`` steps, then cosine decay to 0 at ``total_steps`` (or constant)."""
    t = config.train
    warmup = int(round(float(t.get("warmup_epochs", 0)) * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    if t.schedule == "cosine":
        lr = optax.cosine_decay_schedule(t.learning_rate, max(total_steps - warmup, 1))
    else:
        lr = optax.constant_schedule(t.learning_rate)
    if warmup:
        lr = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, warmup), lr], [warmup])
    return lr


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int = 0) -> optax.GradientTransformation:
    """Optimizer from ``config.train`` with :func:`learning_rate_schedule`."""
    t = config.train
    lr = learning_rate_schedule(config, total_steps, steps_per_epoch)
    if t.schedule == "constant" and not float(t.get("warmup_epochs", 0)):
        lr = t.learning_rate  # a plain float: the optimizer state of earlier constant-rate runs
    if t.optimizer == "adam":
        tx = optax.adam(lr)
        if t.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(t.weight_decay), tx)
        return tx
    if t.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=t.weight_decay)
    return optax.chain(optax.add_decayed_weights(t.weight_decay),
                       optax.sgd(lr, momentum=t.momentum, nesterov=True))


def create_state(model: Any, tx: optax.GradientTransformation, input_shape: tuple[int, ...],
                 key: Array) -> TrainState:
    """Initialize variables on a dummy batch and wrap them in a :class:`TrainState`."""
    p_key, n_key = jax.random.split(key)
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=True))(
        {"params": p_key, "noise": n_key}, x)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def loss_and_metrics(logits: Array, labels: Array, num_classes: int,
                     label_smoothing: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """Mean softmax cross-entropy (optionally label-smoothed) and accuracy."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"loss": loss, "accuracy": acc}


def train_step(state: TrainState, images: Array, labels: Array, noise_key: Array, *,
               num_classes: int, label_smoothing: float = 0.0,
               timesteps: int = 1) -> tuple[TrainState, dict[str, Array]]:
    """One step: noise from ``fold_in(noise_key, state.step)``, loss, gradients, update.

    ``timesteps=1`` is this library's T=1 noisy training; ``timesteps=T > 1`` is spike-based
    backpropagation through time (the BPTT baseline) with the neurons' surrogate gradient.
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


def variables_of(state: TrainState) -> dict[str, Any]:
    """The model variables held by ``state``."""
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


# ----------------------------------------------------------------------------- checkpoints

def _manager(workdir: str, keep: int = 3, create: bool = True):
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save_checkpoint(manager, state: TrainState) -> None:
    """Save ``state`` at its step (blocking until written)."""
    import orbax.checkpoint as ocp
    manager.save(int(state.step), args=ocp.args.StandardSave(serialization.to_state_dict(state)))
    manager.wait_until_finished()


def restore_checkpoint(manager, state: TrainState, log=print) -> TrainState | None:
    """Restore the newest readable checkpoint into ``state``'s structure; None if there is none.

    A corrupt or incompatible newest checkpoint is reported and the previous one is tried.
    """
    import orbax.checkpoint as ocp
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    target = serialization.to_state_dict(state)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    errors = []
    for step in steps:
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
            return serialization.from_state_dict(state, restored)
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
    """Refuse to resume a workdir whose checkpoint came from a different model or dataset."""
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


# ----------------------------------------------------------------------------- the loop

def _write_jsonl(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True, log=print, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train at T=1 per ``config`` into ``workdir`` (resuming if it holds a checkpoint).

    Writes ``config.json``, ``checkpoints/`` and ``metrics.jsonl`` (one JSON line per epoch).
    ``stop_at_step`` ends the run early at that global step, with a checkpoint (a planned
    interruption; re-running continues it). Returns the last epoch's metrics.
    """
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    cfg_path = os.path.join(workdir, "config.json")
    if os.path.exists(cfg_path):
        try:
            with open(cfg_path) as f:
                saved = config_lib.from_json(f.read())
        except Exception as e:
            raise CheckpointError(f"{cfg_path} is unreadable ({type(e).__name__}); "
                                  f"use a new --workdir") from None
        check_compatible(saved, config, workdir)
    ds = dataset_from_config(config)
    if config.model.name != "mlp" and not ds.is_image:
        raise ConfigError(f"model {config.model.name!r} needs images [N, H, W, C] but dataset "
                          f"{ds.name!r} has flat features {ds.input_shape}; use --config.model.name=mlp")
    t = config.train
    if t.batch_size > ds.num_train:
        raise ConfigError(f"config.train.batch_size={t.batch_size} exceeds the {ds.num_train} "
                          f"training examples; use a smaller batch size")
    spe = steps_per_epoch(ds.num_train, t.batch_size)
    total = spe * t.epochs
    model = build_model(config, ds.num_classes)
    tx = make_optimizer(config, total, spe)
    root = jax.random.key(config.seed)
    init_key, noise_key = jax.random.split(root)
    state = create_state(model, tx, ds.input_shape, init_key)
    manager = _manager(workdir, t.keep_checkpoints)
    restored = restore_checkpoint(manager, state, log)
    if restored is not None:
        state = restored
        log(f"resumed from step {int(state.step)} in {workdir}")
    main_process = jax.process_index() == 0
    if main_process:
        with open(cfg_path, "w") as f:
            f.write(config_lib.to_json(config))
    if not main_process:
        log = lambda *a, **k: None  # noqa: E731 - logs and metrics from process 0 only
        progress = False

    timesteps = t.timesteps if config.method == "bptt" else 1
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
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    ckpt_every = t.checkpoint_every_steps or spe
    step = int(state.step)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        progress = False
        tqdm = None
    final = total if stop_at_step is None else min(total, int(stop_at_step))
    stop = _StopOnSignal()
    try:
        last = _loop(config, ds, model, state, step, final, spe, step_fn, rows, to_device, mesh, noise_key, manager,
                     stop, ckpt_every, metrics_path if main_process else None, log,
                     tqdm if progress else None)
    finally:
        stop.restore()
    manager.close()
    return last


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


def _loop(config: ml_collections.ConfigDict, ds: Dataset, model: Any, state: TrainState, step: int,
          final: int, spe: int, step_fn, rows: slice, to_device, mesh, noise_key: Array, manager,
          stop: _StopOnSignal,
          ckpt_every: int, metrics_path: str | None, log, tqdm) -> dict[str, Any]:
    """Steps ``step .. final`` of :func:`train_and_evaluate`: epochs, checkpoints, metrics."""
    t = config.train
    last: dict[str, Any] = {}
    while step < final:
        epoch = step // spe
        end = min((epoch + 1) * spe, final)
        bar = tqdm(total=spe, initial=step - epoch * spe, desc=f"epoch {epoch + 1}/{t.epochs}",
                   leave=False, disable=None, file=sys.stderr) if tqdm else _NoBar()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "accuracy": 0.0}
        count = sampled = 0
        while step < end:
            xb, yb = ds.train_batch(t.batch_size, config.seed, step, rows)  # this process's rows
            state, m = step_fn(state, to_device(xb), to_device(yb), noise_key)
            step += 1
            count += 1
            if count % 10 == 0 or step == end:  # read metrics back every 10 steps, not every step
                m = jax.device_get(m)
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(
                        f"training diverged at step {step} (loss {m['loss']}); lower "
                        f"--config.train.learning_rate (now {t.learning_rate})")
                sampled += 1
                for k in sums:
                    sums[k] += float(m[k])
            bar.update(1)
            if stop.agreed(sync_point=count % 10 == 0 or step == end):
                break
            if step % ckpt_every == 0 and step != end:
                save_checkpoint(manager, state)
        bar.close()
        seconds = time.perf_counter() - t0
        save_checkpoint(manager, state)
        if stop.stopping:
            log(f"signal {stop.requested or 'on another process'} received: saved a checkpoint at step "
                f"{step}; re-run to continue")
            raise TrainingInterrupted(step)
        if step % spe:  # stopped inside an epoch: no epoch summary
            log(f"stopped at step {step} (epoch {epoch + 1} unfinished); re-run to continue")
            break
        ev = convert.evaluate_dataset(model, variables_of(state), ds, 1, config.eval.batch_size, mesh=mesh)
        sampled = max(1, sampled)
        last = {"epoch": epoch + 1, "step": step, "train_loss": sums["loss"] / sampled,
                "train_accuracy": sums["accuracy"] / sampled, "test_accuracy_t1": ev["accuracy"],
                "epoch_seconds": round(seconds, 3), "steps": count}
        if metrics_path:
            _write_jsonl(metrics_path, last)
        log(f"epoch {epoch + 1:3d}/{t.epochs}  loss {last['train_loss']:.4f}  "
            f"train acc {last['train_accuracy']:.4f}  test acc (T=1) {ev['accuracy']:.4f}  "
            f"{seconds:.1f}s")
    return last


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}; a checkpoint was saved, re-run to continue")
        self.step = step


# ----------------------------------------------------------------------------- evaluation

def load_run(workdir: str, log=print, data_dir: str | None = None) -> tuple[ml_collections.ConfigDict, Any,
                                                                           dict[str, Any], Dataset]:
    """Config, model, trained variables and dataset of a training ``workdir`` (``data_dir``
    overrides where a TFDS dataset is read from)."""
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
    spe = steps_per_epoch(ds.num_train, config.train.batch_size)
    tx = make_optimizer(config, spe * config.train.epochs, spe)
    state = create_state(model, tx, ds.input_shape, jax.random.key(0))
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise CheckpointError(f"workdir {workdir!r} has no checkpoint; train first with "
                              f"noisesnn train --workdir {workdir}")
    manager = _manager(workdir, config.train.keep_checkpoints, create=False)
    restored = restore_checkpoint(manager, state, log)
    manager.close()
    if restored is None:
        raise CheckpointError(f"workdir {workdir!r} has no checkpoint; train first with "
                              f"noisesnn train --workdir {workdir}")
    return config, model, variables_of(restored), ds


def evaluate_run(workdir: str, timesteps: tuple[int, ...] | None = None, fold_bn: bool = True,
                 log=print, data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a trained workdir: T=1 (noise at its mean and sampled) and converted at each T.

    Over every device when there are several (the batch sharded on a ``data`` mesh axis; in a
    multi-process run every process calls this and loads only its rows)."""
    config, model, variables, ds = load_run(workdir, log, data_dir)
    mesh = parallel.make_mesh() if jax.device_count() > 1 else None
    bs = config.eval.batch_size
    run_eval = lambda m, v, T, **kw: convert.evaluate_dataset(m, v, ds, T, bs, mesh=mesh, **kw)  # noqa: E731
    timesteps = tuple(timesteps or config.eval.timesteps)
    extra: dict[str, Any] = {}
    if config.method in ("convert", "qcfs"):
        extra["ann_accuracy"] = run_eval(model, variables, 1)["accuracy"]
        thresholds = None
        if config.method == "convert":
            batches = [ds.train_batch(config.train.batch_size, config.seed, i)[0]
                       for i in range(config.convert.num_batches)]
            thresholds = convert.activation_statistics(model, variables, batches, config.convert.percentile)
            extra["thresholds"] = thresholds
        v_init = config.convert.v_init if config.method == "convert" else 0.5
        model, variables = convert.ann_to_snn(model, variables, thresholds, v_init)
    t1 = run_eval(model, variables, 1)
    spiking = model.activation == "spike"
    t1_noisy = t1
    if spiking and model.noise.kind != "none":
        t1_noisy = run_eval(model, variables, 1, sample_noise_key=jax.random.key(config.seed + 1))
    eval_model, eval_vars = (convert.fold_batchnorm(model, variables) if fold_bn
                             else (model, variables))
    accuracy, rates, ops = [], {}, {}
    pixels = max(1024, int(np.prod(ds.input_shape[:-1])))
    probe_size = max(1, min(100, ds.num_test, OPS_PROBE_BUDGET // (min(timesteps) * pixels)))
    probe = ds.test_examples(np.arange(probe_size))[0] if spiking else None
    for T in timesteps:
        r = run_eval(eval_model, eval_vars, T)
        accuracy.append(r["accuracy"])
        rates[str(T)] = r["firing_rates"]
        if spiking:  # on at most 100 test images, fewer for large images and T (it runs unjitted)
            rows = max(1, min(len(probe), OPS_PROBE_BUDGET // (T * pixels)))
            ops[str(T)] = convert.count_ops(eval_model, eval_vars, probe[:rows], T)
    return {
        "dataset": config.dataset.name, "model": config.model.name, "method": config.method,
        "activation": model.activation, "noise": config.noise.to_dict(),
        "num_test": int(ds.num_test), "timesteps": list(timesteps), "accuracy": accuracy,
        "t1_accuracy": t1["accuracy"], "t1_noisy_accuracy": t1_noisy["accuracy"],
        "firing_rates": rates, "ops": ops, "bn_folded": bool(fold_bn), "workdir": workdir, **extra,
    }
