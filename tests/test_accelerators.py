"""benchmarks/accelerators.py: the roofline and memory-fit arithmetic by hand, and its core on a tiny CNN
(compile only, a few seconds)."""

from __future__ import annotations

import math

import pytest

from _helpers import load_script


@pytest.fixture(scope="module")
def acc():
    return load_script("benchmarks/accelerators.py", "noisesnn_accelerators_test")


def test_roofline_compute_and_memory_bound_by_hand(acc):
    chip = acc.Device("toy", peak_flops=100e12, hbm_bandwidth=1e12, hbm_bytes=10e9, source="-")
    assert chip.ridge == pytest.approx(100.0)
    # 4 GFLOP and 10 MB per image: 40 us of compute, 10 us of memory -> compute-bound, 25,000 images/s
    r = acc.roofline(4e9, 10e6, chip)
    assert r["bound"] == "compute"
    assert r["compute_s_per_image"] == pytest.approx(40e-6) and r["memory_s_per_image"] == pytest.approx(10e-6)
    assert r["images_per_s"] == pytest.approx(25_000)
    # 1 GFLOP and 50 MB per image: 10 us of compute, 50 us of memory -> memory-bound, 20,000 images/s
    r = acc.roofline(1e9, 50e6, chip)
    assert r["bound"] == "memory" and r["images_per_s"] == pytest.approx(20_000)
    # a published chip, TPU v5e (197 TFLOP/s, 819 GB/s): 20 GFLOP take 101.5 us; 50 MB take 61.1 us
    # (compute-bound, 9,850 images/s), 100 MB take 122.1 us (memory-bound, 8,190 images/s)
    v5e = next(d for d in acc.DEVICES if d.name == "TPU v5e")
    r = acc.roofline(20e9, 50e6, v5e)
    assert r["bound"] == "compute" and r["images_per_s"] == pytest.approx(9850)
    r = acc.roofline(20e9, 100e6, v5e)
    assert r["bound"] == "memory" and r["images_per_s"] == pytest.approx(8190)


def test_memory_line_and_largest_batch_by_hand(acc):
    # 1 GiB at batch 64 and 1.5 GiB at batch 128: 8 MiB per image on top of 0.5 GiB
    a, b = acc.linear_fit(64, 2 ** 30, 128, 1.5 * 2 ** 30)
    assert a == pytest.approx(0.5 * 2 ** 30) and b == pytest.approx(8 * 2 ** 20)
    assert acc.max_batch(a, b, 16 * 2 ** 30) == (16 * 2 ** 30 - 0.5 * 2 ** 30) // (8 * 2 ** 20) == 1984
    assert acc.max_batch(a, b, 0.25 * 2 ** 30) == 0  # not even one image
    with pytest.raises(ValueError, match="two different batch sizes"):
        acc.linear_fit(64, 1.0, 64, 2.0)


@pytest.mark.slow  # six small compiles, about 25 s on 2 busy cores
def test_plan_on_a_tiny_cnn(acc):
    from noisesnn_jax.run import config as config_lib

    c = config_lib.get_config()
    c.model.channels = (4, 8)
    c.model.pool_after = (0,)
    cases = {k: acc.CASES[k] for k in ("ours_t1_train", "ours_infer_t4", "bptt_t4_train")}
    chip = acc.Device("toy", peak_flops=1e12, hbm_bandwidth=1e10, hbm_bytes=1e8, source="-")
    lines: list[str] = []
    r = acc.plan(c, cases, input_shape=(8, 8, 1), num_classes=10, batch=8, fit_batch=4, devices=(chip,),
                 log=lines.append)
    assert len(lines) == 2 * len(cases)  # a progress line per compile
    res = r["cases"]
    for name, case in res.items():
        at, small = case["at_batch"], case["at_fit_batch"]
        assert at["flops"] > small["flops"] > 0 and at["bytes_accessed"] > 0, name
        assert at["memory_bytes"] == at["argument_bytes"] + at["output_bytes"] - at["alias_bytes"] + at["temp_bytes"] \
            + at["generated_code_bytes"]
        p = case["per_image"]
        assert p["flops"] == pytest.approx(at["flops"] / 8)
        assert p["intensity"] == pytest.approx(p["flops"] / p["bytes_accessed"])
        k = at["kernel_bytes"]  # the HLO parse accounts for the cost analysis' bytes
        assert k["convolution_bytes"] > 0 and k["convolution_bytes"] + k["other_bytes"] == pytest.approx(
            at["bytes_accessed"], rel=0.2), name
        d = case["devices"]["toy"]
        assert d["images_per_s"] == pytest.approx(1 / max(p["flops"] / 1e12, p["bytes_accessed"] / 1e10))
        f = case["memory_fit"]
        assert f["a_bytes"] + 8 * f["b_bytes_per_image"] == pytest.approx(at["memory_bytes"])
        assert f["a_bytes"] + 4 * f["b_bytes_per_image"] == pytest.approx(small["memory_bytes"])
        assert d["max_batch"] == acc.max_batch(f["a_bytes"], f["b_bytes_per_image"], 1e8)
    assert res["ours_t1_train"]["at_batch"]["alias_bytes"] > 0  # the train state is donated
    # time steps cost time: BPTT at T=4 does several times the T=1 step's FLOPs, inference at T=4 more
    # than one forward pass and less than the T=1 training step's forward and backward times 4
    t1 = res["ours_t1_train"]["per_image"]["flops"]
    assert 2.5 * t1 < res["bptt_t4_train"]["per_image"]["flops"] < 5 * t1
    assert t1 / 3 < res["ours_infer_t4"]["per_image"]["flops"] < 4 * t1
    md = acc.render({**r, "date": "today", "machine": "m", "command": "c", "wall_s": 1.0, "slowest_compile": "x",
                     "dtype": "float32", "optimizer": "adam", "label_smoothing": 0.0, "noise": "n", "remat": False,
                     "backend": "cpu"})
    assert "| ours: T=1 noisy training step |" in md and "toy" in md and math.isfinite(d["images_per_s"])
