"""Small spiking CNN on the embedded mnist5k (4,000 train / 1,000 test real MNIST images).

T=1 training with Gaussian noise (mean theta/2, std theta/sqrt(12): the residual potential's own
mean and std, docs/method.md section 3), Adam 1e-3 with cosine decay, 15 epochs, batch 64, label
smoothing 0.1 (chosen over lr 2e-3, weight decay 5e-4 and batch 32 by a one-seed sweep of the
converted accuracy at T = 4..32).
"""

from noisesnn_jax.run.config import get_config as base


def get_config():
    c = base()
    c.dataset.name = "mnist5k"
    c.model.name = "cnn"
    c.model.channels = (16, 32, 64, 64)
    c.model.pool_after = (0, 2)
    c.noise.kind = "gaussian"
    c.train.epochs = 15
    c.train.batch_size = 64
    c.train.label_smoothing = 0.1
    return c
