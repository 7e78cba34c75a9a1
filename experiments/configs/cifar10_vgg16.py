"""Spiking VGG-16 on CIFAR-10 (TFDS ``cifar10``), T=1 training with Gaussian noise.

Recipe: the CIFAR recipe of the ANN-to-SNN conversion literature this method is compared with
(QCFS, Bu et al., ICLR 2022, and its public code): SGD with momentum 0.9 (Nesterov here, this
library's SGD), learning rate 0.1 at batch 128 with cosine decay, weight decay 5e-4, 300 epochs,
random crop with 4-pixel padding and horizontal flip. Noise: Gaussian with the residual potential's own mean theta/2 and std
theta/sqrt(12) (docs/method.md, section 3). Reference numbers at T = 2, 4, 8 are in docs/method.md,
section 6. Prepare the data with ``make prepare DATASET=cifar10 DATA_DIR=...``; run with
``make train-cifar10 DATA_DIR=...``.
"""

from noisesnn_jax.run.config import get_config as base


def get_config():
    c = base()
    c.dataset.name = "cifar10"
    c.model.name = "vgg16"
    c.model.pool = "avg"
    c.noise.kind = "gaussian"
    c.train.epochs = 300
    c.train.batch_size = 128
    c.train.optimizer = "sgd"
    c.train.learning_rate = 0.1
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4
    c.train.schedule = "cosine"
    c.train.checkpoint_every_steps = 1000
    c.eval.timesteps = (1, 2, 4, 8, 16, 32)
    c.eval.batch_size = 500
    return c
