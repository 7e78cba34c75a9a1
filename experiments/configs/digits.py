"""Small spiking CNN on scikit-learn's digits (1,352 train / 445 test 8x8 images)."""

from noisesnn_jax.run.config import get_config as base


def get_config():
    c = base()
    c.dataset.name = "digits"
    c.model.name = "cnn"
    c.model.channels = (32, 32, 64)
    c.model.pool_after = (1,)
    c.noise.kind = "gaussian"
    c.train.epochs = 30
    c.train.batch_size = 32
    return c
