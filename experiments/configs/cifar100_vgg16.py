"""Spiking VGG-16 on CIFAR-100 (TFDS ``cifar100``), T=1 training with Gaussian noise.

The CIFAR-10 recipe of ``cifar10_vgg16.py`` (QCFS' CIFAR recipe: SGD momentum 0.9, Nesterov here, learning rate
0.1 at batch 128 with cosine decay, weight decay 5e-4, 300 epochs, pad-4 crop and flip) on the
100 classes. Reference numbers at T = 2, 4, 8, 64 are in docs/method.md, section 6. Prepare the data
with ``make prepare DATASET=cifar100 DATA_DIR=...``; run with ``make train-cifar100 DATA_DIR=...``.
"""

import os

from noisesnn_jax.run.config import load_config


def get_config():
    c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_vgg16.py"))
    c.dataset.name = "cifar100"
    return c
