"""benchmarks/noise_cost.py: the fusion count on a hand-written HLO, its stand-in generators, and its
report (the measurement itself compiles five training steps: `make noise-cost`)."""

from __future__ import annotations

import jax
import pytest

from _helpers import load_script


@pytest.fixture(scope="module")
def noise_cost():
    return load_script("benchmarks/noise_cost.py", "noisesnn_noise_cost_test")


def test_the_stand_in_generators_draw_what_they_say(noise_cost):
    u = noise_cost._one_round(jax.random.key(0), (4, 1000))
    assert u.shape == (4, 1000) and float(u.min()) >= 0 and float(u.max()) < 2 ** 24
    assert len(set(u.ravel().tolist())) > 3990  # a hash of the index: (almost) all different
    assert set(noise_cost._constant_bits(jax.random.key(0), (3, 3)).ravel().tolist()) == {2.0 ** 23}


def _fusion(name: str, arg: str, body: int, op_name: str, root: str = "") -> str:
    return (f"  {root}%{name} = f32[8]{{0}} fusion(f32[8]{{0}} %{arg}), kind=kLoop, calls=%fused_computation.{body}, "
            f'metadata={{op_name="jit(train_step)/{op_name}"}}')


HLO = "\n".join([
    "%fused_computation.1 (param_0: f32[8]) -> f32[8] {",
    "  %param_0 = f32[8]{0} parameter(0)",
    "  %one = f32[] constant(1)",
    "  %c = f32[8]{0} add(f32[8]{0} %param_0, f32[8]{0} %param_0)",
    "  ROOT %m = f32[8]{0} multiply(f32[8]{0} %c, f32[8]{0} %c)",
    "}",
    "",
    "%fused_computation.2 (param_0: f32[8]) -> f32[8] {",
    "  %param_0 = f32[8]{0} parameter(0)",
    "  ROOT %n = f32[8]{0} negate(f32[8]{0} %param_0)",
    "}",
    "",
    "%fused_computation.3 (param_0: f32[8]) -> f32[8] {",
    "  %param_0 = f32[8]{0} parameter(0)",
    "  ROOT %e = f32[8]{0} exponential(f32[8]{0} %param_0)",
    "}",
    "",
    "ENTRY %main (x: f32[8]) -> f32[8] {",
    "  %x = f32[8]{0} parameter(0)",
    _fusion("f1", "x", 1, "jvp(CNN)/CNN._block/block0/act0/neuron/ge"),
    _fusion("f2", "f1", 2, "transpose(jvp(CNN))/CNN._block/block0/act0/neuron/neg"),
    _fusion("f3", "f2", 3, "jvp(CNN)/CNN._block/block0/bn0/exp", root="ROOT "),
    "}",
    ""])


def test_fusion_ops_counts_the_activations_fusions_by_pass(noise_cost):
    # act0's forward fusion: an add and a multiply (parameters are not counted); its backward: a
    # negate; batch norm's fusion is not an activation's
    assert noise_cost._fusion_ops(HLO) == {"forward": 2, "backward": 1}


def test_the_report_has_a_row_per_case(noise_cost):
    r = {"date": "2026-12-02", "machine": "m", "batch": 64, "repeats": 3, "command": "python benchmarks/noise_cost.py",
         "cases": {name: {"ms": 10.0 * (i + 1), "ratio": float(i + 1), "gflop": 2.0, "mb_accessed": 250.0,
                          "activation_fusion_ops": {"forward": 40 + i, "backward": 90}}
                   for i, name in enumerate(noise_cost.CASES)}}
    md = noise_cost.render(r)
    assert md.count("\n| ") == 1 + len(noise_cost.CASES)  # the header and a row per case
    assert "| ReLU ANN | 10.0 | 1.000 | 2.00 | 250 | 40 | 90 |" in md
    assert "| the same, constant bits | 50.0 | 5.000 |" in md  # the indent of the name is dropped
