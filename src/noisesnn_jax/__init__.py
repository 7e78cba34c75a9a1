"""noisesnn-jax: train spiking networks at T=1 with reparameterized noise, run them at T=N.

Public API::

    Neuron, Noise, noisy_spike          the neuron and its T=1 noisy spike
    neurons.step / neurons.run          pure IF/LIF dynamics (lax.scan over time)
    layers.SpikingNeuron                Flax layer with a T=1 and a multi-step mode
    models.MLP / models.CNN             models (spiking or ReLU)
    convert.fold_batchnorm / predict    T=1 -> T=N conversion
"""

from noisesnn_jax import convert, layers, models, neurons, spikes, surrogate
from noisesnn_jax.errors import CheckpointError, ConfigError, DataError, NoiseSNNError
from noisesnn_jax.layers import SpikingNeuron
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise, expected_spike, noisy_spike

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "Neuron", "Noise", "NoiseSNNError",
    "SpikingNeuron", "convert", "expected_spike", "layers", "models", "neurons", "noisy_spike",
    "spikes", "surrogate",
]
