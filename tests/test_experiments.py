"""The claims-table script (``experiments/fashion_mnist.py``): its plan, its claims on runs, the
results it commits without machine paths, and its tables rewritten by several workers at once."""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


@pytest.fixture(scope="module")
def fm():
    sys.path.insert(0, EXPERIMENTS)  # the script imports its sibling reproduce.py
    try:
        spec = importlib.util.spec_from_file_location("fashion_mnist_claims", os.path.join(EXPERIMENTS, "fashion_mnist.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(EXPERIMENTS)


def _args(fm, tmp_path):
    return argparse.Namespace(config=os.path.join(EXPERIMENTS, "configs", "fashion_mnist.py"),
                              workdir=str(tmp_path / "runs"), out=str(tmp_path / "out"), seeds=3, no_budget=False,
                              timesteps=fm.TIMESTEPS, extra=[])


def test_the_plan_runs_every_seed_0_first_and_the_equal_cost_runs_last(fm):
    todo = fm.plan(3, [], True)
    methods = list(fm.METHODS)
    assert todo[:len(methods)] == [(m, 0, 0) for m in methods]
    assert todo[len(methods):3 * len(methods)] == [(m, s, 0) for s in (1, 2) for m in methods]
    assert all(seed == 0 and epochs > 0 for _, seed, epochs in todo[3 * len(methods):])
    assert len(todo) == len(set(todo)) == 3 * len(methods) + sum(map(len, fm.BUDGET_EPOCHS.values()))
    assert fm.plan(2, ["ann"], False) == [("ann", 0, 0), ("ann", 1, 0)]


def test_a_claim_is_held_by_a_live_process_and_taken_over_from_a_dead_one(fm, tmp_path):
    run = str(tmp_path / "run")
    assert fm.claim(run) and fm.claim(run)  # ours, and still ours
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(os.path.join(run, "claim.pid"), "w") as f:
            f.write(str(holder.pid))
        assert not fm.claim(run)  # a live process holds it
    finally:
        holder.kill()
        holder.wait()
    assert fm.claim(run)  # its holder is dead: taken over
    with open(os.path.join(run, "claim.pid")) as f:
        assert int(f.read()) == os.getpid()


def test_results_name_no_path_of_this_machine(fm, tmp_path):
    workdir = str(tmp_path / "runs")
    result = {"config": {"dataset": {"data_dir": "/home/someone/tensorflow_datasets"},
                         "train": {"init_from": os.path.join(os.path.abspath(workdir), "noisy", "seed0")}},
              "overrides": [f"--config.train.init_from={os.path.abspath(workdir)}/noisy/seed0",
                            "--config.dataset.data_dir=/home/someone/tensorflow_datasets", "--config.seed=0"]}
    r = fm.portable(result, workdir)
    text = json.dumps(r)
    assert str(tmp_path) not in text and "/home/someone" not in text
    assert r["config"]["train"]["init_from"] == os.path.join("<workdir>", "noisy", "seed0")
    assert r["overrides"] == ["--config.train.init_from=<workdir>/noisy/seed0", "--config.seed=0"]


def _write_three_times(path: str, args: argparse.Namespace, todo: list) -> None:
    spec = importlib.util.spec_from_file_location("fashion_mnist_claims", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for _ in range(3):
        module.write(args, todo)


def test_workers_rewriting_the_tables_at_once_leave_whole_files(fm, tmp_path):
    """``--jobs`` workers each rewrite the tables after every run; two at once once crashed a worker
    (both renamed the same temporary plot). Every write must finish, and leave whole files."""
    args = _args(fm, tmp_path)
    os.makedirs(args.out)
    shutil.copy(os.path.join(EXPERIMENTS, "results", "fashion_mnist.json"), args.out)
    todo = fm.plan(3, [], True)
    fm.restore_recorded(args, todo)  # the committed runs become finished runs of this workdir
    assert fm.finished_results(args, todo), "the committed results hold no finished run"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_three_times, args=(os.path.join(EXPERIMENTS, "fashion_mnist.py"), args, todo))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(os.listdir(args.out)) == ["fashion_mnist.json", "fashion_mnist.md", "fashion_mnist.png"]
    with open(os.path.join(args.out, "fashion_mnist.json")) as f:
        assert json.load(f)["runs"]


def test_tables_only_rewrites_the_tables_from_the_recorded_runs_and_trains_nothing(fm, tmp_path):
    """``--tables-only``: the committed runs become the tables again, with the workdir's side-by-side
    cost; no run is claimed and nothing trains."""
    out, work = tmp_path / "out", tmp_path / "runs"
    os.makedirs(out)
    shutil.copy(os.path.join(EXPERIMENTS, "results", "fashion_mnist.json"), out)
    recorded = json.loads((out / "fashion_mnist.json").read_text())
    os.makedirs(work)
    seconds = {"noisy (ours)": 60.0, "ANN (ReLU)": 50.0, "clip-trained conversion": 50.0, "QCFS L=4": 55.0,
               "BPTT T=4": 200.0}
    cost = {"epoch_seconds": seconds, "train_step_temp_mib": {k: 30.0 for k in seconds}, "repeats": 7,
            "steps_per_epoch": 468, "machine": "a test"}
    (work / "cost.json").write_text(json.dumps(cost))
    assert fm.main(["--workdir", str(work), "--out", str(out), "--tables-only"]) == 0
    written = json.loads((out / "fashion_mnist.json").read_text())
    assert len(written["runs"]) == len(recorded["runs"]) and written["train_cost"] == cost
    assert "budget" in (out / "fashion_mnist.md").read_text()
    assert not any(name == "claim.pid" for _, _, files in os.walk(work) for name in files)


def test_a_source_run_restored_without_its_checkpoint_is_trained_again_once(fm, tmp_path, monkeypatch):
    """On a new machine a finished run comes back as its recorded result alone; a run that starts
    from it needs its checkpoint, so it is trained again, once, and an interrupted retraining is
    resumed rather than taken for a finished one."""
    args = _args(fm, tmp_path)
    src = fm.run_dir(args, "noisy", 2, 0)
    os.makedirs(src)
    open(os.path.join(src, "result.json"), "w").write("{}")
    calls = []

    def train(config, workdir, **kwargs):
        calls.append((workdir, int(config.seed)))
        if len(calls) == 1:
            raise KeyboardInterrupt  # the first retraining is cut
        os.makedirs(os.path.join(workdir, "checkpoints", "7020"))

    monkeypatch.setattr(fm, "train_and_evaluate", train)
    with pytest.raises(KeyboardInterrupt):
        fm.wait_for_source("noisy_ft", 2, args, [])
    assert os.path.exists(os.path.join(src, "retraining"))
    fm.wait_for_source("noisy_ft", 2, args, [])  # resumed: trained again, then done
    fm.wait_for_source("noisy_ft", 2, args, [])  # nothing left to do
    assert calls == [(src, 2), (src, 2)] and not os.path.exists(os.path.join(src, "retraining"))
    # a finished run that starts from another needs no checkpoint of it
    done = fm.run_dir(args, "noisy_ft", 1, 0)
    os.makedirs(done)
    open(os.path.join(done, "result.json"), "w").write("{}")
    os.makedirs(fm.run_dir(args, "noisy", 1, 0))
    open(os.path.join(fm.run_dir(args, "noisy", 1, 0), "result.json"), "w").write("{}")
    fm.wait_for_source("noisy_ft", 1, args, [])
    assert len(calls) == 2
