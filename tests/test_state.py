"""A run's model and optimizer from its config (:mod:`noisesnn_jax.run.state`): the learning-rate
schedule, and every zoo name through the one table of model options."""

from __future__ import annotations

import pytest

from noisesnn_jax.errors import ConfigError
from noisesnn_jax.models import CNN, MLP, VGG, ResNet
from noisesnn_jax.run import config as config_lib


def test_learning_rate_warmup_then_cosine():
    from noisesnn_jax.run.state import learning_rate_schedule

    c = config_lib.get_config()
    c.train.learning_rate, c.train.epochs, c.train.warmup_epochs = 0.4, 10, 2.0
    lr = learning_rate_schedule(c, total_steps=100, steps_per_epoch=10)
    assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 0.2) < 1e-6 and abs(float(lr(20)) - 0.4) < 1e-6
    assert float(lr(60)) < 0.4 and abs(float(lr(100))) < 1e-6  # cosine over the 80 steps after warm-up
    c.train.warmup_epochs = 0.0
    assert abs(float(learning_rate_schedule(c, 100, 10)(0)) - 0.4) < 1e-6
    c.train.schedule = "constant"
    assert abs(float(learning_rate_schedule(c, 100, 10)(99)) - 0.4) < 1e-6
    c.train.warmup_epochs = 10.0
    with pytest.raises(ConfigError, match="train.warmup_epochs"):
        config_lib.validate(c)


def test_every_zoo_name_builds_from_a_config():
    """``config.model.name`` picks an entry of one table (``run.state.MODEL_OPTIONS``), the table the
    config's validation accepts; each model gets its own fields from ``config.model``, and an
    unknown name is one ConfigError that lists the choices."""
    from noisesnn_jax import models
    from noisesnn_jax.errors import ConfigError
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.state import MODEL_OPTIONS, build_model

    assert set(MODEL_OPTIONS) == set(models.MODELS)
    c = config_lib.get_config()
    c.model.pool, c.model.stem, c.model.hidden = "max", "imagenet", (12,)
    for name in MODEL_OPTIONS:
        c.model.name = name
        model = build_model(config_lib.validate(c), 7)
        assert model.num_classes == 7
        if name == "mlp":
            assert isinstance(model, MLP) and tuple(model.hidden) == (12,)
        elif name == "cnn":
            assert isinstance(model, CNN) and tuple(model.channels) == c.model.channels and model.pool == "max"
        elif name.startswith("vgg"):
            assert isinstance(model, VGG) and model.pool == "max"
        else:
            assert isinstance(model, ResNet) and model.stem == "imagenet"
    c.model.name = "resnet19"
    with pytest.raises(ConfigError, match="config.model.name='resnet19'.*resnet50"):
        config_lib.validate(c)
    with pytest.raises(ConfigError, match="config.model.name='resnet19'.*resnet50"):
        build_model(c, 7)
