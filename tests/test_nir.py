"""NIR export (:mod:`noisesnn_jax.interop.nir`): the round trip fires the same spikes (an independent
NumPy re-simulation of the file agrees), the graph states how it maps the semantics, strided
convolutions, and what NIR cannot express is named."""

from __future__ import annotations

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from _helpers import trained_like  # noqa: E402
from noisesnn_jax import Neuron, evaluate, layers, models  # noqa: E402
from noisesnn_jax.convert import fold_batchnorm  # noqa: E402
from noisesnn_jax.errors import ExportError  # noqa: E402
from noisesnn_jax.interop import nir as snir  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import nir_reference  # noqa: E402  (written from NIR's node definitions, not from this library)


def spikes_by_layer(model, variables, x, T):
    """Each spiking layer's 0/1 spikes ``[T, B, ...]`` of one multi-step run, by layer name."""
    out = {}

    def grab(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        mod = context.module
        if isinstance(mod, layers.SpikingNeuron) and context.method_name == "__call__":
            theta = (jnp.maximum(mod.variables["params"]["threshold"], 1e-3) if mod.learn_threshold
                     else mod.neuron.threshold)
            path = list(mod.scope.path)
            out[path[-2] if path[-1] == "neuron" and len(path) > 1 else path[-1]] = np.asarray(y / theta)
        return y

    with nn.intercept_methods(grab):
        model.apply(variables, jnp.asarray(x), timesteps=T)
    return out


CASES = {
    "cnn": (lambda: models.CNN(channels=(4, 8, 8), pool_after=(0, 1), learn_threshold=True), (6, 12, 12, 1)),
    "vgg": (lambda: models.VGG(stages=((4,), (8, 8)), hidden=16, neuron=Neuron(tau=2.0)), (6, 8, 8, 3)),
    "resnet": (lambda: models.ResNet(stage_sizes=(1, 1), widths=(4, 8), learn_threshold=True), (6, 8, 8, 3)),
    "mlp": (lambda: models.MLP(hidden=(16, 16), neuron=Neuron(reset="zero")), (6, 6, 6, 1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_same_spikes_and_logits(name, tmp_path):
    """export -> file -> import: every spiking layer fires the same spikes at T=8 and the logits
    agree; an independent NumPy simulation of the graph predicts the same classes."""
    make, shape = CASES[name]
    model = make()
    x = np.asarray(jax.random.uniform(jax.random.key(7), shape))
    v = trained_like(model, x, thresholds=True)
    graph = snir.to_nir(model, v, x, timesteps=8, verify=False)  # this test is the verification
    path = str(tmp_path / f"{name}.nir")
    snir.write(graph, path)
    assert os.listdir(tmp_path) == [f"{name}.nir"]
    net, net_vars = snir.from_nir(path)
    folded, fv = fold_batchnorm(model, v, x)
    want = spikes_by_layer(folded, fv, x, 8)
    got = spikes_by_layer(net, net_vars, x, 8)
    assert set(got) == set(want) and len(want) >= 2
    for layer in want:
        np.testing.assert_array_equal(got[layer], want[layer], err_msg=layer)
    assert any(s.mean() > 0.02 for s in want.values())  # the network is not silent
    a = np.asarray(evaluate.step_logits(folded, fv, x, 8))
    b = np.asarray(evaluate.step_logits(net, net_vars, x, 8))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    ref = nir_reference.simulate(nir.read(path), x.transpose(0, 3, 1, 2), 8)
    np.testing.assert_allclose(ref.reshape(a.shape), a, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(nir_reference.predict(nir.read(path), x.transpose(0, 3, 1, 2), 8),
                                  np.argmax(a.mean(0), -1))


def test_the_graph_says_how_it_maps_the_semantics():
    model = models.CNN(channels=(4,), pool_after=(0,), learn_threshold=True)
    x = np.ones((2, 6, 6, 1), np.float32)
    v = trained_like(model, x, thresholds=True)
    graph = snir.to_nir(model, v, x, timesteps=4)
    assert [type(graph.nodes[n]).__name__ for n in ("input", "conv0", "act0", "pool0", "flatten0", "readout",
                                                    "output")] == [
        "Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output"]
    for key in ("time_step", "input", "readout", "neurons"):
        assert key in graph.metadata
    assert graph.metadata["timesteps"] == 4
    act = graph.nodes["act0"]
    assert act.metadata["reset"] == "subtract" and act.metadata["spike_condition"] == ">="
    theta = np.maximum(np.asarray(v["params"]["act0"]["neuron"]["threshold"]), 1e-3)
    np.testing.assert_allclose(act.v_threshold[:, 0, 0], theta)
    np.testing.assert_allclose(act.metadata["v_init"], 0.5 * act.v_threshold)
    assert graph.nodes["conv0"].weight.shape == (4, 1, 3, 3)  # NIR's [C_out, C_in, kH, kW]


def test_strided_same_convolution_pads_with_zero_taps():
    """A stride-2 SAME convolution pads (0, 1): exported as a 4x4 kernel with a zero first row and
    column and symmetric padding 1, and imported back as the 3x3 kernel."""
    model = models.ResNet(stage_sizes=(1, 1), widths=(4, 8))
    x = np.ones((2, 8, 8, 3), np.float32)
    graph = snir.to_nir(model, model.init(jax.random.key(0), x), x)
    conv = graph.nodes["convs1b0_a"]
    assert conv.weight.shape == (8, 4, 4, 4) and tuple(conv.padding) == (1, 1) and tuple(conv.stride) == (2, 2)
    assert not conv.weight[:, :, 0, :].any() and not conv.weight[:, :, :, 0].any()
    net, nv = snir.from_nir(graph)
    assert nv["params"]["convs1b0_a"]["kernel"].shape == (3, 3, 4, 8)


class MaxPooled(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = layers.SpikingNeuron(name="act0")(nn.Conv(4, (3, 3), name="conv0")(x), timesteps=timesteps, constant=True)
        x = layers.pool2d(x, "max", 2, 2)
        return layers.average_readout(self, nn.Dense(3)(layers.flatten_features(x, timesteps)), timesteps)


class Normalized(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = nn.Conv(4, (3, 3), name="conv0")(x)
        x = layers.SpikingNeuron(name="act0")(x * 2.0, timesteps=timesteps, constant=True)
        return layers.average_readout(self, nn.Dense(3)(layers.flatten_features(x, timesteps)), timesteps)


class Doubled(nn.Module):
    """Scales its output after the readout: nothing the trace records, so only the check sees it."""

    @nn.compact
    def __call__(self, x, *, train=False, timesteps=1, sample_noise=None):
        x = layers.SpikingNeuron(name="act0")(nn.Dense(8, name="dense0")(x), timesteps=timesteps, constant=True)
        return 2.0 * layers.average_readout(self, nn.Dense(3, name="readout")(x), timesteps)


@pytest.mark.parametrize("model,match", [
    (Doubled(), r"the exported graph does not reproduce Doubled"),
    (MaxPooled(), r"pool0: max pooling has no NIR node.*pool='avg'"),
    (models.CNN(channels=(4,), pool_after=(0,), activation="relu"), r"act0: a relu activation is not a spiking"),
    (Normalized(), r"act0: its input comes from an operation the NIR export does not see"),
])
def test_what_nir_cannot_express_is_named(model, match):
    x = np.ones((2, 6, 6, 1), np.float32) if not isinstance(model, Doubled) else np.full((2, 5), 0.7, np.float32)
    with pytest.raises(ExportError, match=match):
        snir.to_nir(model, model.init(jax.random.key(0), x), x)
