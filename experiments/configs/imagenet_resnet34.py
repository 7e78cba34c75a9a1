"""Spiking ResNet-34 on ImageNet (TFDS ``imagenet2012``, 224x224), T=1 training with Gaussian noise.

Recipe: the ImageNet recipe of the conversion literature (QCFS, Bu et al., ICLR 2022: SGD with
momentum 0.9, Nesterov here, learning rate 0.1 per 256 images with cosine decay, weight decay 1e-4, 120 epochs)
with the large-batch rules of Goyal et al. 2017 (learning rate scaled linearly with the batch,
5 warm-up epochs) so the global batch can grow with the pod; label smoothing 0.1 as in Flax's
ImageNet example. Augmentation: random-resized crop and flip; evaluation: resize to 256 and
center crop 224. ``--config.model.dtype=bfloat16`` computes in bf16 (parameters and optimizer
state stay float32). Prepare the data with ``make prepare-imagenet MANUAL_DIR=... DATA_DIR=...``;
run with ``make train-imagenet DATA_DIR=...``. Reference numbers: docs/method.md, section 6.
"""

from noisesnn_jax.run.config import get_config as base


def get_config():
    c = base()
    c.dataset.name = "imagenet2012"
    c.dataset.image_size = 224
    c.model.name = "resnet34"
    c.model.stem = "imagenet"
    c.noise.kind = "gaussian"
    c.train.epochs = 120
    c.train.batch_size = 1024
    c.train.optimizer = "sgd"
    c.train.learning_rate = 0.1 * 1024 / 256
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.schedule = "cosine"
    c.train.warmup_epochs = 5.0
    c.train.label_smoothing = 0.1
    c.train.checkpoint_every_steps = 1000
    c.eval.timesteps = (1, 2, 4, 8, 16, 32)
    c.eval.batch_size = 256
    return c
