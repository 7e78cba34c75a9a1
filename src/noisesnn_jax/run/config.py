"""Experiment configuration: an ``ml_collections.ConfigDict``, validated, overridable from the CLI.

Config files are Python files with ``get_config()`` (see ``experiments/configs/``). Command-line
overrides look like ``--config.train.epochs=3``: the key must exist and the value is parsed as a
Python literal and checked against the field's type.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from typing import Any

import ml_collections

from noisesnn_jax.data import DATASETS, TFDS_DATASETS
from noisesnn_jax.errors import ConfigError
from noisesnn_jax.models import ACTIVATIONS, POOLS
from noisesnn_jax.neurons import RESETS
from noisesnn_jax.run.state import MODEL_OPTIONS
from noisesnn_jax.spikes import NOISE_KINDS, SAMPLERS, Noise
from noisesnn_jax.surrogate import SURROGATES

OPTIMIZERS = ("adam", "adamw", "sgd")
METHODS = ("noisy", "bptt", "convert", "qcfs", "clip")
SCHEDULES = ("cosine", "constant")


def get_config() -> ml_collections.ConfigDict:
    """The default config: a small CNN on ``mnist5k``, T=1 training with ``spikes.Noise()``'s noise.

    Groups: ``method``, ``seed``, ``dataset``, ``model``, ``neuron``, ``noise``, ``train``,
    ``convert`` and ``eval`` (the comments of this function say what each field means).

    Returns:
      A new config.
    """
    c = ml_collections.ConfigDict()
    # noisy: T=1 training with noise (this library's method); bptt: spike-based BP through T
    # steps (train.timesteps); convert: ReLU ANN + threshold balancing; qcfs: QCFS ANN; clip: the
    # ANN with its activation clipped at the threshold (model.learn_threshold: a trainable clip), run
    # as the spiking network with v_init = theta/2 (clip-trained conversion, TCL).
    c.method = "noisy"
    c.seed = 0
    # path: the npz file (name=npz). data_dir: where prepared TFDS datasets live ("" = $TFDS_DATA_DIR,
    # else ~/tensorflow_datasets). image_size: model input side (0 = the dataset's own: 224 for
    # imagenet2012, 32 for cifar and fake). workers: decode/augment threads (0 = up to 16).
    # fake_classes, fake_size: the random dataset of throughput runs (name=fake). validation: hold out
    # the last that many training examples and evaluate on them instead of the test split (choose
    # recipes on it; 0 = the test split). augment: TFDS image datasets' training augmentation, one of
    # pad_crop_flip, flip, none ("" = the dataset's own; imagenet2012 keeps its own).
    c.dataset = ml_collections.ConfigDict({"name": "mnist5k", "path": "", "data_dir": "", "image_size": 0,
                                           "workers": 0, "fake_classes": 10, "fake_size": 1024,
                                           "validation": 0, "augment": ""})
    c.model = ml_collections.ConfigDict({
        "name": "cnn", "activation": "spike", "channels": (16, 32, 64, 64),
        "pool_after": (0, 2), "pool": "avg", "hidden": (256, 256), "batch_norm": True,
        "learn_threshold": False, "learn_std": False, "qcfs_levels": 4,
        # QCFS's initial clip lam (4.0 per channel: this library's first variant; the official
        # code: 8.0, one per layer, trained with SGD and weight decay)
        "qcfs_init": 4.0, "qcfs_per_layer": False,
        # zoo models (vgg11/16, resnet18/20/34/50): stem "cifar" (32x32) or "imagenet";
        # dtype: compute in float32 or bfloat16 (parameters and optimizer state stay float32)
        "stem": "cifar", "dtype": "float32"})
    # tau = 0.0 means IF (no leak); alpha = 0.0 means the surrogate's default sharpness.
    c.neuron = ml_collections.ConfigDict({
        "threshold": 1.0, "tau": 0.0, "reset": "subtract", "surrogate": "triangle", "alpha": 0.0})
    # sampler: how training spikes are drawn (spikes.Noise): hash (fastest), reparam, uniform16.
    default = Noise()  # the command's noise is the library's default noise
    c.noise = ml_collections.ConfigDict({"kind": default.kind, "mean": default.mean, "std": default.std,
                                         "sampler": default.sampler})
    c.train = ml_collections.ConfigDict({
        "epochs": 15, "batch_size": 64, "optimizer": "adam", "learning_rate": 1e-3,
        "schedule": "cosine", "weight_decay": 0.0, "momentum": 0.9, "label_smoothing": 0.0,
        "checkpoint_every_steps": 0, "keep_checkpoints": 3, "log_every_steps": 0, "tensorboard": False,
        "timesteps": 4, "remat": False, "warmup_epochs": 0.0,
        # Fine-tuning: a training workdir whose latest params and batch_stats start this run (the
        # optimizer and the step start afresh), e.g. a short BPTT fine-tune of a T=1 network.
        "init_from": ""})
    # Classic conversion (method=convert): per-layer threshold = this percentile of the ANN's
    # activations on the first num_batches training batches; v_init in units of the threshold.
    c.convert = ml_collections.ConfigDict({"percentile": 99.9, "num_batches": 8, "v_init": 0.0})
    c.eval = ml_collections.ConfigDict({
        "timesteps": (1, 2, 4, 8, 16, 32), "batch_size": 500})
    return c


def load_config(path: str) -> ml_collections.ConfigDict:
    """Run ``get_config()`` of the Python file at ``path``.

    Args:
      path: a Python file that defines ``get_config()`` (e.g. ``experiments/configs/mnist5k.py``).

    Returns:
      Its config (not validated: :func:`validate`).

    Raises:
      ConfigError: the file is missing, fails to load, or has no ``get_config``.
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} not found; pass an existing file such as "
                          f"experiments/configs/mnist5k.py")
    spec = importlib.util.spec_from_file_location("_noisesnn_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"config file {path!r} failed to load ({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config(); define one returning a ConfigDict")
    return module.get_config()


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set ``config.<key>`` from a command-line string.

    The string is parsed as a Python literal (else kept as a string) and checked against the
    field's current type: a number for a tuple field becomes a one-element tuple, an int for a
    float field a float, and a string field takes the text as it is.

    Args:
      config: the config, changed in place.
      key: the dotted field name, e.g. ``train.epochs``.
      text: the value as typed.

    Raises:
      ConfigError: an unknown key, a group instead of a field, or a value of the wrong type.
    """
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            where = ".".join(parts[:i]) or "config"
            raise ConfigError(f"unknown config key 'config.{key}': {where} has no field {part!r}"
                              f" (known: {', '.join(known)})")
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    value = _parse_value(text)
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(f"config.{key} is a group; set one of its fields, e.g. config.{key}.{sorted(old.keys())[0]}")
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config.{key}={text!r} is invalid; expected True or False")
    elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(old, tuple):
        if isinstance(value, (int, float)):
            value = (value,)
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple):
            raise ConfigError(f"config.{key}={text!r} is invalid; expected a tuple such as 1,2,4")
    elif isinstance(old, str):
        value = text
    elif old is not None and type(value) is not type(old):
        raise ConfigError(f"config.{key}={text!r} is invalid; expected a {type(old).__name__}")
    node[parts[-1]] = value


def apply_overrides(config: ml_collections.ConfigDict, args: list[str]) -> ml_collections.ConfigDict:
    """Apply ``--config.a.b=value`` (or ``--config.a.b value``) arguments in order.

    Args:
      config: the config, changed in place.
      args: the command-line arguments.

    Returns:
      ``config``.

    Raises:
      ConfigError: an argument that is not an override, one without a value, or as
        :func:`apply_override`.
    """
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --config.train.epochs=3")
        body = arg[len("--config."):]
        if "=" in body:
            key, text = body.split("=", 1)
        elif i + 1 < len(args):
            key, text = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg} has no value; write {arg}=VALUE")
        apply_override(config, key, text)
        i += 1
    return config


def _require(cond: bool, field: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"config.{field}={value!r} is invalid; {allowed}")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every value a user can set.

    Args:
      c: the config.

    Returns:
      ``c``, unchanged.

    Raises:
      ConfigError: the first invalid value, naming the field and the fix.
    """
    for check in _CHECKS:
        check(c)
    return c


def _check_run_and_dataset(c: ml_collections.ConfigDict) -> None:
    """``seed``, ``method`` and ``dataset``."""
    _require(isinstance(c.seed, int) and not isinstance(c.seed, bool) and c.seed >= 0, "seed", c.seed,
             "it must be an integer >= 0")
    _require(c.method in METHODS, "method", c.method, f"choose one of {list(METHODS)}")
    _require(c.dataset.name in DATASETS, "dataset.name", c.dataset.name, f"choose one of {list(DATASETS)}")
    d = c.dataset
    for f in ("image_size", "workers"):
        _require(isinstance(d[f], int) and d[f] >= 0, f"dataset.{f}", d[f], "use 0 (the default) or a positive integer")
    _require(d.image_size == 0 or d.name in TFDS_DATASETS + ("fake",), "dataset.image_size", d.image_size,
             f"dataset {d.name!r} is used at its own size; leave it 0 (it applies to TFDS and fake datasets)")
    for f in ("fake_classes", "fake_size"):
        _require(isinstance(d[f], int) and d[f] >= 2, f"dataset.{f}", d[f], "it must be an integer >= 2")
    _require(isinstance(d.get("validation", 0), int) and d.get("validation", 0) >= 0, "dataset.validation",
             d.get("validation"), "use 0 (evaluate on the test split) or the number of training examples to hold out")
    _require(d.get("validation", 0) == 0 or d.name != "fake", "dataset.validation", d.get("validation"),
             "the fake dataset has no validation split; use 0")
    _require(d.get("augment", "") in ("", "pad_crop_flip", "flip", "none"), "dataset.augment", d.get("augment"),
             "choose pad_crop_flip, flip or none, or leave it empty for the dataset's own")
    _require(not d.get("augment", "") or d.name in TFDS_DATASETS and d.name != "imagenet2012", "dataset.augment",
             d.get("augment"), "it applies to TFDS datasets other than imagenet2012; leave it empty")


def _check_model(c: ml_collections.ConfigDict) -> None:
    """``model``: the name (a :data:`noisesnn_jax.run.state.MODEL_OPTIONS` entry) and the architecture."""
    m = c.model
    _require(m.name in MODEL_OPTIONS, "model.name", m.name, f"choose one of {sorted(MODEL_OPTIONS)}")
    _require(m.activation in ACTIVATIONS, "model.activation", m.activation, f"choose one of {list(ACTIVATIONS)}")
    _require(m.pool in POOLS, "model.pool", m.pool, f"choose one of {list(POOLS)}")
    _require(m.get("stem", "cifar") in ("cifar", "imagenet"), "model.stem", m.get("stem"), "choose cifar or imagenet")
    _require(m.get("dtype", "float32") in ("float32", "bfloat16"), "model.dtype", m.get("dtype"),
             "choose float32 or bfloat16")
    for f in ("channels", "hidden"):
        v = m[f]
        _require(isinstance(v, tuple) and len(v) > 0 and all(isinstance(w, int) and w > 0 for w in v),
                 f"model.{f}", v, "use a non-empty tuple of positive integers")
    _require(all(isinstance(i, int) and 0 <= i < len(m.channels) for i in m.pool_after),
             "model.pool_after", m.pool_after, f"use block indices in 0..{len(m.channels) - 1}")


def _check_neuron_and_noise(c: ml_collections.ConfigDict) -> None:
    """``neuron`` and ``noise``."""
    n = c.neuron
    _require(_positive(n.threshold), "neuron.threshold", n.threshold, "it must be a number > 0")
    _require(n.tau == 0 or (_positive(n.tau) and n.tau >= 1), "neuron.tau", n.tau,
             "use 0 for IF (no leak) or a number >= 1 for LIF")
    _require(n.reset in RESETS, "neuron.reset", n.reset, f"choose one of {list(RESETS)}")
    _require(n.surrogate in SURROGATES, "neuron.surrogate", n.surrogate, f"choose one of {sorted(SURROGATES)}")
    _require(n.alpha == 0 or _positive(n.alpha), "neuron.alpha", n.alpha,
             "use 0 for the surrogate's default or a number > 0")
    z = c.noise
    _require(z.kind in NOISE_KINDS, "noise.kind", z.kind, f"choose one of {list(NOISE_KINDS)}")
    _require(isinstance(z.mean, (int, float)) and math.isfinite(z.mean), "noise.mean", z.mean,
             "it must be a finite number (in units of the threshold)")
    _require(_positive(z.std), "noise.std", z.std, "it must be a number > 0 (in units of the threshold)")
    _require(z.get("sampler", "reparam") in SAMPLERS, "noise.sampler", z.get("sampler"), f"choose one of {list(SAMPLERS)}")


def _check_train(c: ml_collections.ConfigDict) -> None:
    """``train``."""
    t = c.train
    _require(isinstance(t.epochs, int) and t.epochs >= 1, "train.epochs", t.epochs, "it must be an integer >= 1")
    _require(isinstance(t.batch_size, int) and t.batch_size >= 1, "train.batch_size", t.batch_size,
             "it must be an integer >= 1")
    _require(t.optimizer in OPTIMIZERS, "train.optimizer", t.optimizer, f"choose one of {list(OPTIMIZERS)}")
    _require(t.schedule in SCHEDULES, "train.schedule", t.schedule, f"choose one of {list(SCHEDULES)}")
    _require(_positive(t.learning_rate), "train.learning_rate", t.learning_rate, "it must be a number > 0")
    _require(isinstance(t.warmup_epochs, (int, float)) and not isinstance(t.warmup_epochs, bool)
             and 0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs",
             t.warmup_epochs, "use a number of epochs in [0, train.epochs)")
    _require(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "it must be >= 0")
    _require(0 <= t.label_smoothing < 1, "train.label_smoothing", t.label_smoothing, "use a value in [0, 1)")
    _require(isinstance(t.checkpoint_every_steps, int) and t.checkpoint_every_steps >= 0,
             "train.checkpoint_every_steps", t.checkpoint_every_steps, "use 0 (every epoch) or a positive integer")
    _require(isinstance(t.keep_checkpoints, int) and t.keep_checkpoints >= 1, "train.keep_checkpoints",
             t.keep_checkpoints, "it must be an integer >= 1")
    _require(isinstance(t.get("log_every_steps", 0), int) and t.get("log_every_steps", 0) >= 0,
             "train.log_every_steps", t.get("log_every_steps"), "use 0 (only a line per epoch) or a positive integer")
    _require(isinstance(t.get("tensorboard", False), bool), "train.tensorboard", t.get("tensorboard"),
             "use True (TensorBoard event files in <workdir>/tensorboard; needs tensorboardX) or False")
    _require(isinstance(t.get("init_from", ""), str), "train.init_from", t.get("init_from"),
             "use the path of a training workdir (or leave it empty)")
    _require(isinstance(t.timesteps, int) and t.timesteps >= 1, "train.timesteps", t.timesteps,
             "it must be an integer >= 1 (the BPTT unroll length)")


def _check_method_settings(c: ml_collections.ConfigDict) -> None:
    """The settings of the ANN methods (QCFS's ``model.qcfs_*``, ``convert``) and BPTT's activation."""
    m = c.model
    _require(isinstance(m.qcfs_levels, int) and m.qcfs_levels >= 1, "model.qcfs_levels", m.qcfs_levels,
             "it must be an integer >= 1")
    _require(_positive(m.get("qcfs_init", 4.0)), "model.qcfs_init", m.get("qcfs_init"), "it must be a number > 0")
    _require(isinstance(m.get("qcfs_per_layer", False), bool), "model.qcfs_per_layer", m.get("qcfs_per_layer"),
             "use True (one lam per layer) or False (one per channel)")
    cv = c.convert
    _require(0 < cv.percentile <= 100, "convert.percentile", cv.percentile, "use a value in (0, 100]")
    _require(isinstance(cv.num_batches, int) and cv.num_batches >= 1, "convert.num_batches",
             cv.num_batches, "it must be an integer >= 1")
    _require(isinstance(cv.v_init, (int, float)) and 0 <= cv.v_init < 1, "convert.v_init", cv.v_init,
             "use a value in [0, 1) (units of the threshold; 0 or 0.5)")
    if c.method in ("bptt",) and m.activation != "spike":
        raise ConfigError("config.method=bptt trains a spiking network; set --config.model.activation=spike")


def _check_eval(c: ml_collections.ConfigDict) -> None:
    """``eval``."""
    e = c.eval
    _require(isinstance(e.timesteps, tuple) and len(e.timesteps) > 0
             and all(isinstance(v, int) and v >= 1 for v in e.timesteps),
             "eval.timesteps", e.timesteps, "use a tuple of integers >= 1, e.g. (1, 2, 4, 8)")
    _require(isinstance(e.batch_size, int) and e.batch_size >= 1, "eval.batch_size", e.batch_size,
             "it must be an integer >= 1")


# The steps of :func:`validate`, in the order their fields are checked (the first invalid one is reported).
_CHECKS = (_check_run_and_dataset, _check_model, _check_neuron_and_noise, _check_train, _check_method_settings,
           _check_eval)


def to_json(c: ml_collections.ConfigDict) -> str:
    """The config as sorted JSON (tuples become lists).

    Args:
      c: the config.

    Returns:
      The JSON text.
    """
    return json.dumps(c.to_dict(), sort_keys=True, indent=1)


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`to_json` onto the defaults (lists become tuples).

    Fields the JSON lacks keep their defaults (:func:`get_config`), so an older run's config
    reads into the current layout.

    Args:
      text: the JSON text.

    Returns:
      The config (not validated).
    """
    def fix(v):
        if isinstance(v, list):
            return tuple(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v
    data = fix(json.loads(text))
    c = get_config()
    for group, values in data.items():
        if isinstance(values, dict) and group in c:
            for k, v in values.items():
                c[group][k] = v
        else:
            c[group] = values
    return c
