"""benchmarks/peers: the peer-library CNNs build, compute the described network, and time.

Peers are optional (CI installs none): each missing peer is skipped, never failed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import pytest

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "peers")
NAMES = ("spikingjelly", "snntorch", "spyx")


def _load():
    spec = importlib.util.spec_from_file_location("noisesnn_peers_test", os.path.join(PATH, "__init__.py"),
                                                  submodule_search_locations=[PATH])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # the package's modules import each other relatively
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def peers():
    return _load()


@pytest.fixture(scope="module")
def status(peers):
    return peers.available()


def test_available_lists_every_peer(peers, status):
    assert tuple(peers.PEERS) == NAMES
    assert isinstance(status, dict) and set(status) == set(NAMES)
    for reason in status.values():
        assert reason is None or (isinstance(reason, str) and reason and "\n" not in reason)
    # conv kernels + BN scale/shift + readout of the noisesnn_jax.models.CNN defaults
    assert peers.NUM_PARAMS == 16 * 9 + 32 * 16 * 9 + 64 * 32 * 9 + 64 * 64 * 9 + 2 * (16 + 32 + 64 + 64) + 3136 * 10 + 10


def test_unknown_peer_is_rejected(peers):
    with pytest.raises(ValueError):
        peers.bench_peer("nope", 2)


@pytest.mark.parametrize("name", NAMES)
def test_unavailable_peer_raises(peers, status, name):
    if status[name] is None:
        pytest.skip(f"{name} is installed")
    with pytest.raises(RuntimeError):
        peers.bench_peer(name, 2)


@pytest.mark.parametrize("name", NAMES)
def test_peer_network_and_timings(peers, status, name):
    if status[name] is not None:
        pytest.skip(f"{name}: {status[name]}")
    net = peers.check_peer(name, batch=2, timesteps=2)
    assert net["output_shape"] == (2, 10) and net["finite"]
    assert net["num_params"] == peers.NUM_PARAMS
    assert net["spike_layers"] == 4
    assert set(net["spike_values"]) <= {0.0, 1.0}

    r = peers.bench_peer(name, batch=2, timesteps=(2,), train_timesteps=2, repeats=1, warmup=0)
    assert r["library"] == name and isinstance(r["version"], str) and r["version"]
    assert r["repeats"] == 1 and isinstance(r["note"], str)
    assert set(r["inference_s"]) == {2}
    for t in [*r["inference_s"].values(), r["train_step_s"]]:
        assert isinstance(t, float) and math.isfinite(t) and t > 0


def test_snntorch_reads_our_nir_graph_with_the_same_predictions(tmp_path):
    """experiments/nir_interop.py's snnTorch reader, after its documented mapping step, predicts
    what this library predicts (peers environment only)."""
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    nir = pytest.importorskip("nir")
    import jax
    import numpy as np

    from noisesnn_jax import evaluate, models
    from noisesnn_jax.interop import nir as snir

    spec = importlib.util.spec_from_file_location(
        "nir_interop", os.path.join(os.path.dirname(PATH), "..", "experiments", "nir_interop.py"))
    interop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(interop)
    model = models.CNN(channels=(4, 8), pool_after=(0, 1))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (32, 12, 12, 1)))
    v = {k: c for k, c in model.init(jax.random.key(0), x).items() if k in ("params", "batch_stats")}
    path = str(tmp_path / "cnn.nir")
    snir.write(snir.to_nir(model, v, x), path)
    got = interop.snntorch_predict(nir.read(path), np.ascontiguousarray(x.transpose(0, 3, 1, 2)), 8)
    want = np.asarray(evaluate.predict(model, v, x, 8)[0]).argmax(-1)
    np.testing.assert_array_equal(got, want)


def test_spikingjelly_resnet18_matches_ours(peers, status):
    """The ResNet-18 of the bench's second table has our zoo model's parameter count and times."""
    import jax
    import jax.numpy as jnp

    from noisesnn_jax.models import resnet18

    v = jax.eval_shape(lambda x: resnet18(num_classes=10).init({"params": jax.random.key(0)}, x),
                       jnp.ones((1, 32, 32, 3)))
    assert peers.resnet18_params() == sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(v["params"]))
    if status["spikingjelly"] is not None:
        pytest.skip(status["spikingjelly"])
    runs, info = peers.resnet18_runners("spikingjelly", batch=1, timesteps=(2,))
    assert info["num_params"] == peers.resnet18_params()
    runs[2]()
