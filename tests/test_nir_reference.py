"""Tests of the independent NIR re-simulator (tests/nir_reference.py) on tiny hand-built graphs, values derived by hand."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from nir_reference import predict, simulate

F32 = np.float32


def _chain(*nodes, shape_in, shape_out, type_check=True):
    """Input -> nodes[0] -> ... -> Output, nodes named n0, n1, ..."""
    named = {f"n{i}": node for i, node in enumerate(nodes)}
    names = ["in", *named, "out"]
    all_nodes = {"in": nir.Input(np.array(shape_in)), **named, "out": nir.Output(np.array(shape_out))}
    return nir.NIRGraph(nodes=all_nodes, edges=list(zip(names[:-1], names[1:])), type_check=type_check)


def _if(n, threshold=1.0, v_reset=0.0, **metadata):
    return nir.IF(
        r=np.ones(n, F32), v_threshold=np.full(n, threshold, F32), v_reset=np.full(n, v_reset, F32), metadata=metadata
    )


def test_if_constant_input_subtract_reset():
    # r = 1, threshold 1, input 0.3; element 0 starts at v_init 0.5, element 1 at 0.
    # el. 0: v = 0.8, 1.1 -> spike, 0.1, 0.4, 0.7     el. 1: v = 0.3, 0.6, 0.9, 1.2 -> spike, 0.2 + 0.3 = 0.5
    node = _if(2, reset="subtract", v_init=np.array([0.5, 0.0], F32))
    record = {}
    out = simulate(_chain(node, shape_in=[2], shape_out=[2]), np.full((1, 2), 0.3, F32), 5, record=record)
    expected = np.array([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], F32)
    assert out.shape == (5, 1, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], expected)
    np.testing.assert_array_equal(record["n0"][:, 0], expected)


def test_exact_threshold_nir_default_vs_ge_subtract():
    x = np.array([[0.5, 0.75]], F32)  # exactly representable, so v hits 1.0 exactly
    # NIR default (v > thr, v <- v_reset = 0): 0.5: v = 0.5, 1.0 (no spike), 1.5 -> 0, 0.5, 1.0, 1.5 -> 0
    #                                          0.75: v = 0.75, 1.5 -> 0, 0.75, 1.5 -> 0, 0.75, 1.5
    out = simulate(_chain(_if(2), shape_in=[2], shape_out=[2]), x, 6)[:, 0]
    np.testing.assert_array_equal(out.T, [[0, 0, 1, 0, 0, 1], [0, 1, 0, 1, 0, 1]])
    # ">=", subtract: 0.5: v = 0.5, 1.0 -> 0, 0.5, 1.0 -> 0, ...; 0.75: 0.75, 1.5 -> 0.5, 1.25 -> 0.25, 1.0 -> 0, 0.75, 1.5
    node = _if(2, spike_condition=">=", reset="subtract")
    out = simulate(_chain(node, shape_in=[2], shape_out=[2]), x, 6)[:, 0]
    np.testing.assert_array_equal(out.T, [[0, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 1]])
    # NIR default with v_reset = 0.25, input 0.5: v = 0.5, 1.0, 1.5 -> 0.25, 0.75, 1.25 -> 0.25, 0.75
    out = simulate(_chain(_if(1, v_reset=0.25), shape_in=[1], shape_out=[1]), x[:, :1], 6)[:, 0, 0]
    np.testing.assert_array_equal(out, [0, 0, 1, 0, 1, 0])


def test_metadata_as_bytes():
    node = _if(1, spike_condition=b">=", reset=np.bytes_(b"subtract"), v_init=np.float32(0.5))
    # v = 1.0 -> spike (>=) -> 0, 0.5, 1.0 -> spike
    out = simulate(_chain(node, shape_in=[1], shape_out=[1]), np.full((1, 1), 0.5, F32), 3)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 0, 1])


def test_lif_forward_euler_leak():
    # tau = 2, r = 1, v_leak = 0, I = 1, threshold 0.8: v = 0.5, 0.75, 0.875 -> spike -> 0, 0.5, 0.75, 0.875 -> spike
    # (an exact exponential decay 1 - exp(-t/2) = 0.39, 0.63, 0.78, 0.86 would first spike at step 4)
    lif = nir.LIF(
        tau=np.full(2, 2.0, F32), r=np.ones(2, F32), v_leak=np.array([0.0, 1.0], F32), v_threshold=np.array([0.8, 0.5], F32)
    )
    # element 1: v_leak = 1, I = 0.25, tau = 2: v = 0.5 * (1 + 0.25) = 0.625 -> spike each step
    x = np.array([[1.0, 0.25]], F32)
    out = simulate(_chain(lif, shape_in=[2], shape_out=[2]), x, 6)[:, 0]
    np.testing.assert_array_equal(out.T, [[0, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1]])
    # v_leak = 1, I = 0, tau = 4, threshold 0.5: v = 0.25, 0.4375, 0.578125 -> spike
    lif = nir.LIF(tau=np.full(1, 4.0, F32), r=np.ones(1, F32), v_leak=np.ones(1, F32), v_threshold=np.full(1, 0.5, F32))
    out = simulate(_chain(lif, shape_in=[1], shape_out=[1]), np.zeros((1, 1), F32), 3)
    np.testing.assert_array_equal(out[:, 0, 0], [0, 0, 1])


def _conv_loops(x, w, b, stride, pad):
    c_in, h, wd = x.shape
    xp = np.zeros((c_in, h + 2 * pad, wd + 2 * pad))
    xp[:, pad : pad + h, pad : pad + wd] = x
    c_out, _, kh, kw = w.shape
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((c_out, ho, wo))
    for o in range(c_out):
        for i in range(ho):
            for j in range(wo):
                acc = b[o]
                for c in range(c_in):
                    for u in range(kh):
                        for v in range(kw):
                            acc += w[o, c, u, v] * xp[c, i * stride + u, j * stride + v]
                out[o, i, j] = acc
    return out


def test_conv2d_matches_nested_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 5, 5)).astype(F32)
    w, b = rng.normal(size=(3, 2, 3, 3)).astype(F32), rng.normal(size=3).astype(F32)
    conv = nir.Conv2d(input_shape=(5, 5), weight=w, stride=2, padding=1, dilation=1, groups=1, bias=b)
    out = simulate(_chain(conv, shape_in=[2, 5, 5], shape_out=[3, 3, 3]), x, 2)
    assert out.shape == (2, 1, 3, 3, 3)
    np.testing.assert_allclose(out[0, 0], _conv_loops(x[0], w, b, 2, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[1])
    # 'same' with stride 1 and a 3x3 kernel is padding 1; dilation 2 is refused
    same = nir.Conv2d(input_shape=(5, 5), weight=w, stride=1, padding="same", dilation=1, groups=1, bias=b)
    out = simulate(_chain(same, shape_in=[2, 5, 5], shape_out=[3, 5, 5]), x, 1)
    np.testing.assert_allclose(out[0, 0], _conv_loops(x[0], w, b, 1, 1), rtol=1e-5, atol=1e-5)
    dil = nir.Conv2d(input_shape=(5, 5), weight=w, stride=1, padding=2, dilation=2, groups=1, bias=b)
    with pytest.raises(ValueError):
        simulate(_chain(dil, shape_in=[2, 5, 5], shape_out=[3, 5, 5]), x, 1)


def test_avgpool_flatten_channel_major():
    x = np.arange(32, dtype=F32).reshape(1, 2, 4, 4)
    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    flat = nir.Flatten(input_type=np.array([2, 2, 2]), start_dim=0, end_dim=-1)
    out = simulate(_chain(pool, flat, shape_in=[2, 4, 4], shape_out=[8]), x, 1)[0, 0]
    # channel 0 windows {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}; channel 1 is channel 0 + 16
    np.testing.assert_array_equal(out, [2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5])
    # padding counts in the average: a 2x2 of ones padded by 1, 2x2 windows at stride 2 hold one 1 each
    ones = np.ones((1, 1, 2, 2), F32)
    avg = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([1, 1]))
    np.testing.assert_array_equal(simulate(_chain(avg, shape_in=[1, 2, 2], shape_out=[1, 2, 2]), ones, 1)[0, 0], 0.25)
    total = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([1, 1]))
    np.testing.assert_array_equal(simulate(_chain(total, shape_in=[1, 2, 2], shape_out=[1, 2, 2]), ones, 1)[0, 0], 1.0)


def test_two_edges_into_one_node_are_summed():
    nodes = {
        "in": nir.Input(np.array([3])),
        "a": nir.Scale(scale=np.full(3, 2.0, F32)),
        "b": nir.Linear(weight=10 * np.eye(3, dtype=F32)),
        "out": nir.Output(np.array([3])),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("in", "a"), ("in", "b"), ("a", "out"), ("b", "out")])
    x = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]], F32)
    np.testing.assert_allclose(simulate(graph, x, 2), np.stack([12 * x, 12 * x]))


def test_affine_and_predict():
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], F32)
    aff = nir.Affine(weight=w, bias=np.array([0.0, 0.0, -1.5], F32))
    x = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]], F32)
    # outputs: [2, 0, 0.5], [0, 2, 0.5], [1, 1, 0.5]
    graph = _chain(aff, shape_in=[2], shape_out=[3])
    np.testing.assert_allclose(simulate(graph, x, 1)[0], [[2, 0, 0.5], [0, 2, 0.5], [1, 1, 0.5]])
    np.testing.assert_array_equal(predict(graph, x[:2], 3), [0, 1])


def test_roundtrip_through_nir_file(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 1, 3, 3)).astype(F32)
    conv = nir.Conv2d(input_shape=(4, 4), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2, F32))
    spk = nir.IF(
        r=np.ones((2, 4, 4), F32),
        v_threshold=np.ones((2, 4, 4), F32),
        metadata={"reset": "subtract", "spike_condition": ">=", "v_init": np.full((2, 4, 4), 0.5, F32)},
    )
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    flat = nir.Flatten(input_type=np.array([2, 2, 2]), start_dim=0, end_dim=-1)
    aff = nir.Affine(weight=rng.normal(size=(3, 8)).astype(F32), bias=rng.normal(size=3).astype(F32))
    graph = _chain(conv, spk, pool, flat, aff, shape_in=[1, 4, 4], shape_out=[3])
    nir.write(tmp_path / "g.nir", graph)
    back = nir.read(tmp_path / "g.nir")
    assert isinstance(back.nodes["n1"].metadata["reset"], (str, bytes))
    x = rng.uniform(size=(2, 1, 4, 4)).astype(F32)
    rec_a, rec_b = {}, {}
    out_a, out_b = simulate(graph, x, 4, record=rec_a), simulate(back, x, 4, record=rec_b)
    assert out_a.shape == (4, 2, 3)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(rec_a["n1"], rec_b["n1"])
    assert rec_a["n1"].shape == (4, 2, 2, 4, 4) and rec_a["n1"].any()


def test_cycle_unknown_node_and_io_count_raise():
    scale = lambda: nir.Scale(scale=np.ones(2, F32))
    nodes = {"in": nir.Input(np.array([2])), "a": scale(), "b": scale(), "out": nir.Output(np.array([2]))}
    cyclic = nir.NIRGraph(nodes=nodes, edges=[("in", "a"), ("a", "b"), ("b", "a"), ("b", "out")], type_check=False)
    x = np.ones((1, 2), F32)
    with pytest.raises(ValueError, match="cycle"):
        simulate(cyclic, x, 1)
    unknown = _chain(nir.Threshold(threshold=np.ones(2, F32)), shape_in=[2], shape_out=[2], type_check=False)
    with pytest.raises(ValueError, match="unsupported"):
        simulate(unknown, x, 1)
    nodes = {"in": nir.Input(np.array([2])), "in2": nir.Input(np.array([2])), "out": nir.Output(np.array([2]))}
    two_inputs = nir.NIRGraph(nodes=nodes, edges=[("in", "out"), ("in2", "out")], type_check=False)
    with pytest.raises(ValueError, match="exactly one"):
        simulate(two_inputs, x, 1)
