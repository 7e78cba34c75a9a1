"""The model contract (:mod:`noisesnn_jax.contract`): the mistakes a user's own model can make fail with
a message that names the fix (a user's model through folding, evaluation and operation counting:
tests/test_convert.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noisesnn_jax import evaluate
from noisesnn_jax.contract import SpikingModel, check_model
from noisesnn_jax.layers import SpikingNeuron, average_readout, flatten_features


class Forgetful(nn.Module):
    """The README's pattern with the first spiking layer's ``constant=True`` forgotten."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = nn.Conv(4, (3, 3))(x)
        x = SpikingNeuron()(x, timesteps=timesteps, train=train, sample_noise=sample_noise)
        x = nn.Dense(10)(flatten_features(x, timesteps))
        return average_readout(self, x, timesteps)


@pytest.mark.parametrize("batch", [16, 4])
def test_forgotten_constant_is_a_clear_error_not_wrong_logits(batch):
    model, x = Forgetful(), jnp.ones((batch, 6, 6, 1))
    v = model.init(jax.random.key(0), x)
    assert model.apply(v, x).shape == (batch, 10)  # T=1 is fine
    with pytest.raises(ValueError, match=r"expects a time-major input \[T=8, B, \.\.\.\].*constant=True"):
        model.apply(v, x, timesteps=8)


class Flattening(nn.Module):
    """Loses the time axis before the readout: ``[T, B, ...] -> [T*B, ...]``."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = SpikingNeuron()(nn.Dense(8)(x), timesteps=timesteps, constant=True, train=train,
                            sample_noise=sample_noise)
        return nn.Dense(3)(x.reshape((-1, x.shape[-1])))


def test_a_model_that_loses_the_batch_axis_is_caught_by_the_runner():
    model, x = Flattening(), np.ones((5, 4), np.float32)
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"returned logits of shape \(40, 3\) for a batch of 5 at timesteps=8"):
        evaluate.predict(model, v, x, 8)


class NoSampleNoise(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1):
        return nn.Dense(3)(x)


def test_a_model_without_the_contract_keywords_is_named():
    with pytest.raises(TypeError, match="lacks the keyword argument.*sample_noise.*contract"):
        evaluate.evaluate(NoSampleNoise(), {}, np.ones((2, 4), np.float32), np.zeros(2, np.int32))
    check_model(Forgetful())
    assert isinstance(Forgetful(), SpikingModel)
