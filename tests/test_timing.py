"""The timing harness: cases interleaved round-robin, medians reported; reports written whole."""

from __future__ import annotations

import json

import pytest

from noisesnn_jax import timing


def test_measure_interleaves_cases_and_reports_each():
    calls = []
    out = timing.measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == ["a", "b"] * 4  # one warm-up round, then three interleaved rounds


def test_settle_calls_each_case_again_right_before_its_timed_call(monkeypatch):
    calls, timed = [], []
    cases = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    real = timing.time.perf_counter
    monkeypatch.setattr(timing.time, "perf_counter", lambda: timed.append(len(calls)) or real())  # calls so far
    timing.measure(cases, repeats=2, warmup=1, settle=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 2
    # the clock starts after the settling call and stops after the timed one: calls 3-4, 5-6, ...
    assert timed == [3, 4, 5, 6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="settle=-1"):
        timing.measure(cases, settle=-1)


def test_write_report_replaces_both_files(tmp_path, capsys):
    timing.write_report(str(tmp_path / "out"), "r", {"x": 1}, "| a |\n")
    timing.write_report(str(tmp_path / "out"), "r", {"x": 2}, "| b |\n")
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == {"x": 2}
    assert (tmp_path / "out" / "r.md").read_text() == "| b |\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json", "r.md"]
    assert "| b |" in capsys.readouterr().out
