"""Throughput runs on random images (``dataset.name=fake``): the ImageNet ResNet-34 recipe on
fake 224x224 data by default, no download needed. Accuracy is meaningless; images/s and memory
are not. Shrink it with overrides, e.g. ``--config.model.name=resnet18
--config.dataset.image_size=32 --config.model.stem=cifar --config.train.batch_size=64``.
"""

import os

from noisesnn_jax.run.config import load_config


def get_config():
    c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_resnet34.py"))
    c.dataset.name = "fake"
    c.dataset.fake_classes = 1000
    c.dataset.fake_size = 4096
    c.train.epochs = 2
    c.train.warmup_epochs = 0.0
    c.train.checkpoint_every_steps = 0
    return c
