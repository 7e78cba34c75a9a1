"""Mutation testing (``make mutation``): mutmut over each group of modules, against the tests that target it.

mutmut takes one test selection for a whole run and runs, for each mutant, every selected test that reached
the mutated function; a function that the model tests reach (the neurons, the spikes) would then pay for the
whole model suite on every mutant. So each group runs in its own directory, ``build/mutation/<group>``: a copy
of ``src/``, ``tests/`` and ``pyproject.toml`` whose ``[tool.mutmut]`` is this file's group on top of the
repository's common settings. A rerun is incremental (mutmut keeps the verdicts of unchanged functions).

    python tools/mutation.py [--jobs N] [--sample K] [GROUP ...]    # default: every group
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "src/noisesnn_jax/"

#: group: (files to mutate, tests to run, mutant-name patterns; None: every mutant of the files)
GROUPS: dict[str, tuple[list[str], list[str], list[str] | None]] = {
    "surrogate": ([PKG + "surrogate.py"], ["tests/test_surrogate.py", "tests/test_neurons.py"], None),
    "neurons": ([PKG + "neurons.py"], ["tests/test_neurons.py", "tests/test_surrogate.py"], None),
    "spikes": ([PKG + "spikes.py"], ["tests/test_spikes.py", "tests/test_surrogate.py"], None),
    "layers": ([PKG + "layers.py"], ["tests/test_layers.py", "tests/test_models.py::test_fast_multistep_equals_naive_loop",
                                     "tests/test_shapes_property.py::test_a_noise_key_without_train_warns_once"], None),
    "convert": ([PKG + "convert.py"], ["tests/test_convert.py"], None),
    "pieces": ([PKG + "pieces.py"], ["tests/test_pieces.py"], None),
    "batching": ([PKG + "data/batching.py", PKG + "data/__init__.py"], ["tests/test_batching.py", "tests/test_data.py"],
                 ["noisesnn_jax.data.batching.*", "noisesnn_jax.data.x_train_batch__mutmut_*",
                  "noisesnn_jax.data.xǁArrayDatasetǁtrain_batch__mutmut_*",
                  "noisesnn_jax.data.xǁFakeDatasetǁtrain_batch__mutmut_*",
                  "noisesnn_jax.data.xǁFakeDatasetǁ_examples__mutmut_*"]),
    "train_step": ([PKG + "run/train.py"], ["tests/test_models.py::test_bfloat16_compute_keeps_float32_parameters",
                                             "tests/test_data.py::test_fake_dataset_trains_through_the_loop",
                                             "tests/test_train.py::test_train_learns_and_resume_is_exact",
                                             "tests/test_train.py::test_loss_and_metrics_against_a_hand_computation",
                                             "tests/test_train.py::test_train_step_trains_with_noise_and_updates_the_batch_statistics"],
                   ["noisesnn_jax.run.train.x_train_step__mutmut_*", "noisesnn_jax.run.train.x_loss_and_metrics__mutmut_*"]),
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 34: "skipped", 36: "timeout", -24: "timeout",
          24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings are the same in TOML


def _pyproject(files: list[str], tests: list[str]) -> str:
    """The repository's pyproject.toml with ``[tool.mutmut]`` replaced by the group's."""
    import tomllib

    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    common = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    settings = dict(common, only_mutate=files, pytest_add_cli_args_test_selection=tests)
    return text.rstrip() + "\n\n[tool.mutmut]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())


def _results(workdir: str, patterns: list[str] | None) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in glob.glob(os.path.join(workdir, "mutants", "src", "**", "*.py.meta"), recursive=True):
        codes.update(json.load(open(meta))["exit_code_by_key"])
    return {k: v for k, v in codes.items() if patterns is None or any(fnmatch.fnmatch(k, p) for p in patterns)}


def run_group(name: str, jobs: int, sample: int) -> dict:
    files, tests, patterns = GROUPS[name]
    workdir = os.path.join(ROOT, "build", "mutation", name)
    os.makedirs(workdir, exist_ok=True)
    for sub in ("src", "tests"):  # copy2 keeps the mtimes: mutmut regenerates only changed files
        shutil.copytree(os.path.join(ROOT, sub), os.path.join(workdir, sub), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(workdir, "pyproject.toml"), "w") as f:
        f.write(_pyproject(files, tests))
    mutmut = os.path.join(os.path.dirname(sys.executable), "mutmut")
    names = list(patterns or [])
    if sample:  # every sample-th mutant (needs the mutants generated: a first run, or --sample after one)
        known = sorted(_results(workdir, patterns))
        if not known:
            subprocess.run([mutmut, "run", "--max-children", str(jobs), "no.such.mutant"], cwd=workdir,
                           capture_output=True)  # generates the mutants, then stops on the empty filter
            known = sorted(_results(workdir, patterns))
        names = known[::sample]
    start = time.time()
    proc = subprocess.run([mutmut, "run", "--max-children", str(jobs), *names], cwd=workdir,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - start
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:])
    codes = _results(workdir, patterns)
    if sample:
        codes = {k: v for k, v in codes.items() if k in names}
    counts: dict[str, int] = {}
    for v in codes.values():
        counts[STATUS.get(v, "suspicious")] = counts.get(STATUS.get(v, "suspicious"), 0) + 1
    survivors = sorted(k for k, v in codes.items() if STATUS.get(v, "suspicious") not in ("killed", "timeout"))
    tested = sum(n for s, n in counts.items() if s in ("killed", "timeout", "survived", "suspicious"))
    score = (counts.get("killed", 0) + counts.get("timeout", 0)) / tested if tested else float("nan")
    rate = re.findall(r"([0-9.]+) mutations/second", proc.stdout)  # of the mutation phase alone
    return dict(group=name, mutants=len(codes), counts=counts, score=score, wall_s=round(wall, 1),
                mutant_s=round(1 / float(rate[-1]), 1) if rate and float(rate[-1]) else None,
                survivors=survivors, rc=proc.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", default=list(GROUPS))
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (mutmut --max-children)")
    parser.add_argument("--sample", type=int, default=0, help="test only every K-th mutant (a cost estimate)")
    args = parser.parse_args()
    for name in args.groups:
        r = run_group(name, args.jobs, args.sample)
        print(json.dumps({k: v for k, v in r.items() if k != "survivors"}), flush=True)
        for s in r["survivors"]:
            print("   ", s, flush=True)


if __name__ == "__main__":
    main()
