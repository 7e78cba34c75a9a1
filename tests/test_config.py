"""Run configs (:mod:`noisesnn_jax.run.config`): overrides parsed and type-checked, each invalid value
naming its field, the JSON round trip and every experiment config."""

from __future__ import annotations

import pytest

from noisesnn_jax.errors import ConfigError
from noisesnn_jax.run import config as config_lib


def test_overrides_parse_and_type_check():
    c = config_lib.get_config()
    config_lib.apply_overrides(c, ["--config.train.epochs=3", "--config.noise.kind=uniform",
                                   "--config.noise.std", "0.2", "--config.model.channels=8,16",
                                   "--config.eval.timesteps=4", "--config.model.learn_std=True",
                                   "--config.train.learning_rate=1"])
    assert c.train.epochs == 3 and c.noise.kind == "uniform" and c.noise.std == 0.2
    assert c.model.channels == (8, 16) and c.eval.timesteps == (4,) and c.model.learn_std is True
    assert c.train.learning_rate == 1.0
    with pytest.raises(ConfigError, match="unknown config key 'config.train.epoch'"):
        config_lib.apply_overrides(c, ["--config.train.epoch=3"])
    with pytest.raises(ConfigError, match="expected a int"):
        config_lib.apply_overrides(c, ["--config.train.epochs=three"])
    with pytest.raises(ConfigError, match="True or False"):
        config_lib.apply_overrides(c, ["--config.model.learn_std=1"])
    with pytest.raises(ConfigError, match="overrides look like"):
        config_lib.apply_overrides(c, ["--epochs=3"])


@pytest.mark.parametrize("key,value,field", [
    ("noise.kind", "cauchy", "noise.kind"), ("noise.std", "0.0", "noise.std"),
    ("neuron.threshold", "-1.0", "neuron.threshold"), ("neuron.tau", "0.5", "neuron.tau"),
    ("train.epochs", "0", "train.epochs"), ("dataset.name", "cifar", "dataset.name"),
    ("model.pool", "min", "model.pool"), ("model.pool_after", "7", "model.pool_after"),
    ("eval.timesteps", "0,4", "eval.timesteps"), ("train.learning_rate", "0.0", "train.learning_rate"),
])
def test_validation_names_the_field(key, value, field):
    c = config_lib.get_config()
    config_lib.apply_overrides(c, [f"--config.{key}={value}"])
    with pytest.raises(ConfigError, match=f"config.{field}="):
        config_lib.validate(c)


def test_config_json_roundtrip_and_files():
    c = config_lib.load_config("experiments/configs/mnist5k.py")
    config_lib.validate(c)
    back = config_lib.from_json(config_lib.to_json(c))
    assert back.to_dict() == c.to_dict()
    with pytest.raises(ConfigError, match="not found"):
        config_lib.load_config("experiments/configs/nope.py")


@pytest.mark.parametrize("override, field", [
    ("--config.seed=-1", "seed"), ("--config.train.warmup_epochs=True", "train.warmup_epochs"),
    ("--config.dataset.image_size=64", "dataset.image_size"),  # digits has its own size
    ("--config.dataset.workers=-2", "dataset.workers"), ("--config.dataset.fake_classes=1", "dataset.fake_classes"),
])
def test_invalid_values_name_their_field(override, field):
    c = config_lib.get_config()
    c.dataset.name = "digits"
    with pytest.raises(ConfigError, match=f"config.{field}="):
        config_lib.validate(config_lib.apply_overrides(c, [override]))


def test_every_experiment_config_is_valid():
    import glob

    paths = sorted(glob.glob("experiments/configs/*.py"))
    assert {"cifar10_vgg16.py", "cifar100_vgg16.py", "imagenet_resnet34.py", "fake_data.py"} <= {
        p.split("/")[-1] for p in paths}
    for path in paths:
        config_lib.validate(config_lib.load_config(path))
