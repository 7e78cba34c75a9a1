"""NIR import (:mod:`noisesnn_jax.interop.nir_import`): each unreadable or unsupported graph is one clear
error, and a graph from elsewhere follows NIR's own semantics (checked against an independent NumPy
re-simulation)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from noisesnn_jax import evaluate  # noqa: E402
from noisesnn_jax.errors import ExportError  # noqa: E402
from noisesnn_jax.interop import nir as snir  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import nir_reference  # noqa: E402  (written from NIR's node definitions, not from this library)


def test_import_errors(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ExportError, match="is not a readable NIR file"):
        snir.from_nir(str(bad))
    with pytest.raises(ExportError, match="does not exist"):
        snir.from_nir(str(tmp_path / "missing.nir"))
    inp = nir.Input(input_type={"input": np.array([4])})
    out = nir.Output(output_type={"output": np.array([3])})
    delay = nir.Delay(delay=np.ones(4))
    g = nir.NIRGraph(nodes={"in": inp, "d": delay, "out": out}, edges=[("in", "d"), ("d", "out")], type_check=False)
    with pytest.raises(ExportError, match="node 'd' is a Delay, which is not imported"):
        snir.from_nir(g)
    aff = nir.Affine(weight=np.ones((3, 5), np.float32), bias=np.zeros(3, np.float32))
    g = nir.NIRGraph(nodes={"in": inp, "fc": aff, "out": out}, edges=[("in", "fc"), ("fc", "out")], type_check=False)
    with pytest.raises(ExportError, match=r"node 'fc': Affine weight \(3, 5\) does not take an input of shape \(4,\)"):
        snir.from_nir(g)


def test_import_follows_nir_semantics_without_this_librarys_metadata():
    """A graph from elsewhere (no metadata): fire on v > v_threshold, reset to 0, start at 0; the
    imported model agrees with the independent NumPy simulation, including exact ties."""
    w = np.array([[0.5], [0.25], [1.0]], np.float32)
    nodes = {"in": nir.Input(input_type={"input": np.array([1])}),
             "fc": nir.Linear(weight=w),
             "if": nir.IF(r=np.ones(3, np.float32), v_threshold=np.ones(3, np.float32)),
             "out": nir.Output(output_type={"output": np.array([3])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "if"), ("if", "out")], type_check=False)
    net, nv = snir.from_nir(g)
    x = np.ones((1, 1), np.float32)
    got = np.asarray(evaluate.step_logits(net, nv, x, 6))[:, 0]
    want = nir_reference.simulate(g, x, 6)[:, 0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 0], [0, 0, 1, 0, 0, 1])  # v = 0.5, 1.0 (not > 1), 1.5 -> reset to 0
