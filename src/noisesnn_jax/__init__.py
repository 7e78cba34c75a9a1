"""noisesnn-jax: train spiking networks at T=1 with reparameterized noise, run them at T=N.

Public API::

    Neuron, Noise, noisy_spike          the neuron and its T=1 noisy spike
    neurons.step / neurons.run          pure IF/LIF dynamics (lax.scan over time)
    layers.SpikingNeuron                Flax layer with a T=1 and a multi-step mode
    contract.SpikingModel               the keyword arguments every model takes
    models.MLP / CNN / VGG / ResNet     models (spiking, ReLU or QCFS)
    convert.fold_batchnorm              batch norm folded for the T=N network
    evaluate.predict / evaluate         multi-step inference and accuracy; evaluate_run of a workdir
    pieces.microbatch_size              cache-sized pieces of an inference batch on a CPU
    ops.count_ops                       synaptic operations and energy estimate
    baselines.ann_to_snn                classic ANN-to-SNN conversion
    train.train_and_evaluate            the training loop (state, checkpoint: its parts)
"""

from noisesnn_jax import baselines, contract, convert, evaluate, layers, models, neurons, ops, spikes, surrogate
from noisesnn_jax.errors import CheckpointError, ConfigError, DataError, NoiseSNNError
from noisesnn_jax.layers import SpikingNeuron
from noisesnn_jax.neurons import Neuron
from noisesnn_jax.spikes import Noise, expected_spike, noisy_spike

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "Neuron", "Noise", "NoiseSNNError",
    "SpikingNeuron", "baselines", "contract", "convert", "evaluate", "expected_spike", "layers", "models",
    "neurons", "noisy_spike", "ops", "spikes", "surrogate",
]
