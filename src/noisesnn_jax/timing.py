"""One timing harness for benchmarks and experiments: cases timed side by side.

On a shared, noisy machine only ratios measured in the same run mean something, so cases are
interleaved round-robin (case A, case B, case A, ...) after a warm-up and each is reported as the
median of its repeats.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def measure(cases: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
            settle: int = 0) -> dict[str, float]:
    """Median wall seconds of each ``cases[name]()``, the cases interleaved round-robin.

    Interleaving spreads the machine's drift over every case alike. When the cases differ much in
    size (a step with 600 MiB of buffers beside one with 40), the call that follows a large case
    also pays for the memory that case left behind (freed pages faulted in again, cold caches);
    ``settle`` untimed calls of the same case just before each timed one remove that order effect.

    Args:
      cases: name -> a function of no arguments that blocks until its work is done
        (``jax.block_until_ready`` on its outputs).
      repeats: timed calls of each case.
      warmup: untimed calls of each case first (compilation, caches).
      settle: untimed calls of a case right before each of its timed calls.

    Returns:
      name -> median seconds of its ``repeats`` calls.

    Raises:
      ValueError: ``repeats < 1``, ``warmup < 0`` or ``settle < 0``.
    """
    if repeats < 1 or warmup < 0 or settle < 0:
        raise ValueError(f"repeats={repeats}, warmup={warmup} and settle={settle} are invalid; "
                         "use repeats >= 1, warmup >= 0, settle >= 0")
    for run in cases.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            for _ in range(settle):
                run()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def machine() -> str:
    """Describe the machine in one line: processor, cores, Python, jax version and backend.

    Returns:
      The line, e.g. ``"x86_64, 2 cores, Python 3.12.3, jax 0.10.2 on cpu"``.
    """
    import jax
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"jax {jax.__version__} on {jax.default_backend()}")


def compiled_temp_mib(fn: Callable, *args) -> float:
    """MiB of temporary buffers XLA allocates for the jitted ``fn`` on ``args`` (its memory analysis).

    Args:
      fn: the function to compile (``jax.jit``).
      *args: its example arguments.

    Returns:
      The temporary buffer size in MiB; NaN where the backend does not report it.
    """
    import jax
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:
        return float("nan")
    return float(getattr(analysis, "temp_size_in_bytes", float("nan"))) / 2 ** 20


def write_report(out: str, name: str, result: dict, markdown: str) -> None:
    """Write a measurement as ``out/name.json`` and ``out/name.md``, then print the markdown.

    Each file is replaced whole, so a cut run leaves the previous report.

    Args:
      out: the folder (created if missing).
      name: the file name without extension.
      result: the measurement, JSON-serializable.
      markdown: its human-readable report.
    """
    import json

    os.makedirs(out, exist_ok=True)
    for ext, text in (("json", json.dumps(result, indent=1)), ("md", markdown)):
        path = os.path.join(out, f"{name}.{ext}")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(markdown)
