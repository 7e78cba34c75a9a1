"""benchmarks/scaling.py: the least-squares fit by hand, the report from a hand-made measurement, and
the whole script on --quick sizes (a few small compiles)."""

from __future__ import annotations

import json

import pytest

from _helpers import load_script


@pytest.fixture(scope="module")
def scaling():
    return load_script("benchmarks/scaling.py", "noisesnn_scaling_test")


def test_fit_line_by_hand(scaling):
    # on a line: y = 2 x + 3
    fit = scaling.fit_line([1, 2, 4, 8, 16], [5, 7, 11, 19, 35])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(3.0)
    # off a line: (0, 0), (1, 1), (2, 1): x mean 1, y mean 2/3, Sxy = 1, Sxx = 2 -> slope 1/2, intercept 1/6
    fit = scaling.fit_line([0, 1, 2], [0, 1, 1])
    assert fit["slope"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(1 / 6)
    # a constant: slope 0
    assert scaling.fit_line([1, 2, 4], [7.5, 7.5, 7.5])["slope"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="two different xs"):
        scaling.fit_line([4, 4], [1, 2])
    with pytest.raises(ValueError, match="as many ys as xs"):
        scaling.fit_line([1, 2], [1, 2, 3])


def test_summary_and_report_of_a_hand_made_measurement(scaling):
    Ts, batches = [1, 2, 4], [16, 32]
    train_T = {"ours": {"ms": {"1": 10.0, "2": 10.0, "4": 10.0}, "temp_mib": {"1": 2.0, "2": 2.0, "4": 2.0}},
               "bptt": {"ms": {"1": 12.0, "2": 22.0, "4": 42.0}, "temp_mib": {"1": 2.0, "2": 4.0, "4": 8.0}},
               "spikingjelly": {"skipped": "not installed (torch): pip install ..."}}
    inf = {"1": 1.0, "2": 2.0, "4": 4.0}
    train_B = {"ours": {"ms": {"16": 5.0, "32": 9.0}, "temp_mib": {"16": 1.0, "32": 2.0}},
               "bptt T=4": {"ms": {"16": 20.0, "32": 40.0}, "temp_mib": {"16": 4.0, "32": 8.0}}}
    s = scaling.summarize(train_T, inf, train_B, Ts, batches)
    assert s["slopes"]["train_ms_per_T"]["bptt"]["slope"] == pytest.approx(10.0)
    assert s["slopes"]["train_ms_per_T"]["ours"]["slope"] == pytest.approx(0.0, abs=1e-12)
    assert s["slopes"]["temp_mib_per_T"]["bptt"]["slope"] == pytest.approx(2.0)
    assert s["slopes"]["inference_ms_per_T"]["slope"] == pytest.approx(1.0)
    assert s["slopes"]["train_ms_per_image"]["ours"]["slope"] == pytest.approx(0.25)
    assert s["slopes"]["train_ms_per_image"]["bptt T=4"]["slope"] == pytest.approx(1.25)
    assert "spikingjelly" not in s["slopes"]["train_ms_per_T"]
    assert s["ratio_bptt_to_ours"]["time"] == pytest.approx({"1": 1.2, "2": 2.2, "4": 4.2})
    assert s["ratio_bptt_to_ours"]["temp_memory"] == pytest.approx({"1": 1.0, "2": 2.0, "4": 4.0})
    r = {"date": "2000-01-01", "machine": "toy", "command": "python benchmarks/scaling.py", "quick": False,
         "config": "experiments/configs/fashion_mnist.py", "model": {"name": "cnn", "channels": [4], "pool_after": [0]},
         "input_shape": [28, 28, 1], "num_classes": 10, "batch": 32, "infer_batch": 64, "repeats": 7, "warmup": 2,
         "timesteps": Ts, "batches": batches, "batch_sweep_bptt_T": 4, "train_vs_T": train_T,
         "inference_vs_T": {"ms": inf}, "train_vs_batch": train_B, **s}
    md = scaling.render(r)
    assert "| 4 | 10.0 | 42.0 | 4.20 | not installed | 2.0 | 8.0 | 4.00 |" in md
    assert "flat by construction" in md and "`make install-peers`" in md
    assert "| 4 | 4.0 | 0.062 | 1.00 |" in md  # inference: 4 ms = 4 x the T=1 call


@pytest.mark.slow  # about 10 small compiles: ~40 s on 2 quiet cores, a minute or more on busy ones
def test_quick_run_writes_the_report(scaling, tmp_path):
    assert scaling.main(["--quick", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scaling.json", "scaling.md", "scaling.png"]
    r = json.loads((tmp_path / "scaling.json").read_text())
    Ts, batches = r["timesteps"], r["batches"]
    assert Ts == list(scaling.QUICK["timesteps"]) and batches == list(scaling.QUICK["batches"]) and r["quick"]
    assert r["config"] == "experiments/configs/fashion_mnist.py" and r["input_shape"] == [28, 28, 1]
    assert r["command"].startswith("python benchmarks/scaling.py --quick") and r["machine"]
    tr = r["train_vs_T"]
    for name in ("ours", "bptt"):
        assert set(tr[name]["ms"]) == set(tr[name]["temp_mib"]) == {str(T) for T in Ts}
        assert all(v > 0 for v in tr[name]["ms"].values()) and all(v > 0 for v in tr[name]["temp_mib"].values())
    # ours trains at T=1: one measurement, the same on every row, and the report says so
    assert len(set(tr["ours"]["ms"].values())) == 1 and len(set(tr["ours"]["temp_mib"].values())) == 1
    assert "measured once" in tr["ours"]["note"]
    assert r["slopes"]["train_ms_per_T"]["ours"]["slope"] == pytest.approx(0.0, abs=1e-9)
    # BPTT's compiled memory grows with T
    assert tr["bptt"]["temp_mib"][str(Ts[-1])] > tr["bptt"]["temp_mib"][str(Ts[0])]
    assert "skipped" in tr["spikingjelly"] or set(tr["spikingjelly"]["ms"]) == {str(T) for T in Ts}
    assert set(r["inference_vs_T"]["ms"]) == {str(T) for T in Ts}
    for name in ("ours", f"bptt T={r['batch_sweep_bptt_T']}"):
        assert set(r["train_vs_batch"][name]["ms"]) == {str(B) for B in batches}
    assert set(r["ratio_bptt_to_ours"]["time"]) == {str(T) for T in Ts}
    md = (tmp_path / "scaling.md").read_text()
    assert "flat by construction" in md and "--quick: tiny sizes" in md and "Least-squares slopes" in md
