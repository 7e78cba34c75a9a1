"""Shared fixtures: small configs that train in seconds on the embedded digits data."""

from __future__ import annotations

import os

import pytest

# Compiling dominates this suite's time, and most of a CPU compile is LLVM optimizing machine code
# that then runs a few times on tiny inputs: at backend optimization level 0 a ResNet-18 training
# step compiles in about half the time, a random initializer in a fifth. Float semantics do not
# change (XLA's CPU backend does not reassociate without fast-math, which stays off), so every
# comparison holds as at the default level. The processes that tests start inherit it (CHILD_XLA_FLAGS).
CHILD_XLA_FLAGS = "--xla_backend_optimization_level=0"
# Two pytest workers on two cores: one thread each keeps them from fighting over the cores.
os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=false {CHILD_XLA_FLAGS}")

# One persistent XLA compilation cache for the whole test session: the pytest workers and the
# processes that tests start (which inherit the environment) compile the same small programs again
# and again, and compiling dominates this suite's time. Entries are keyed by the program, the
# compile options and the JAX version, so a hit runs what a fresh compile would. The folder is new
# for each session (made once, by the process that starts the workers) and removed at its end;
# NOISESNN_TEST_COMPILE_CACHE=0 turns the cache off.
_OWN_CACHE = None  # (folder, pid of the process that made it: forked children must not remove it)
if os.environ.get("NOISESNN_TEST_COMPILE_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_CACHE = (tempfile.mkdtemp(prefix="noisesnn-test-xla-cache-"), os.getpid())
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE[0]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and _OWN_CACHE[1] == os.getpid():
        import shutil

        shutil.rmtree(_OWN_CACHE[0], ignore_errors=True)


@pytest.fixture
def tiny_config():
    """An MLP on digits, 2 epochs: trains in a few seconds."""
    from noisesnn_jax.run import config as config_lib

    c = config_lib.get_config()
    c.dataset.name = "digits"
    c.model.name = "mlp"
    c.model.hidden = (32,)
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.eval.timesteps = (1, 4)
    return c


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrainProcesses:
    """``noisesnn train`` as separate processes on CPU: two processes on 127.0.0.1 with one device
    each (``jax.distributed.initialize`` through ``--coordinator``), or one with several devices."""

    @staticmethod
    def command(slow_from_step: int | None = None, marker: str = "") -> list[str]:
        """``python -m noisesnn_jax``; with ``slow_from_step``, the same command through
        ``tests/slow_train.py``: every training step from that one on takes at least 0.5 s and
        ``marker`` is created when the first of them starts, so a test can send a signal mid-training
        on a machine of any speed."""
        import sys

        if slow_from_step is None:
            return [sys.executable, "-m", "noisesnn_jax"]
        return [sys.executable, os.path.join(os.path.dirname(__file__), "slow_train.py"), marker,
                str(slow_from_step)]

    @staticmethod
    def wait_for(path: str, proc, timeout: float = 300) -> None:
        """Wait until ``path`` exists; fail early with the output if ``proc`` ended first."""
        import time

        deadline = time.time() + timeout
        while not os.path.exists(path):
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the run ended (exit {proc.returncode}) before {path} appeared:\n"
                                     f"{(out or '')[-2000:]}{(err or '')[-2000:]}")
            assert time.time() < deadline, f"{path} did not appear within {timeout} s"
            time.sleep(0.05)

    def env(self, devices: int) -> dict:
        env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu", XLA_FLAGS=CHILD_XLA_FLAGS)
        return env

    def start_two(self, workdir: str, args: list[str], command: list[str] | None = None) -> list:
        """Start both processes; ``command`` replaces ``python -m noisesnn_jax`` (see
        :meth:`command`)."""
        import subprocess

        port = _free_port()
        return [subprocess.Popen((command or self.command()) + [
                                  "train", "--workdir", workdir,
                                  "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                  "--process-id", str(i)] + args, env=self.env(1), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
                for i in range(2)]

    def run_two(self, workdir: str, args: list[str]) -> list[str]:
        procs = self.start_two(workdir, args)
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        return outs

    def run_one(self, workdir: str, args: list[str], devices: int = 2) -> str:
        import subprocess

        proc = subprocess.run(self.command() + ["train", "--workdir", workdir] + args,
                              env=self.env(devices), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    @staticmethod
    def assert_same_params(a: str, b: str, layers: tuple[str, ...], rtol: float = 1e-5, atol: float = 1e-6):
        import numpy as np

        from noisesnn_jax.run.checkpoint import load_run

        pa = load_run(a, log=lambda m: None)[2]["params"]
        pb = load_run(b, log=lambda m: None)[2]["params"]
        for name in layers:
            np.testing.assert_allclose(np.asarray(pa[name]["kernel"]), np.asarray(pb[name]["kernel"]),
                                       rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture
def train_processes() -> TrainProcesses:
    return TrainProcesses()
