"""The training order: which examples make the batch of global step ``k``.

A function of ``(number of examples, seed, k)`` only, so a resumed run, and a run on any number of
processes, sees the same batches. Shared by every dataset (:mod:`noisesnn_jax.data`,
:mod:`noisesnn_jax.data.tfds`).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a function of ``(seed, epoch)`` only (resumable).

    Cached, so the per-step batch lookup does not redraw it.

    Args:
      n: the number of training examples.
      seed: the run's data seed.
      epoch: the epoch, from 0.

    Returns:
      A read-only permutation of ``0..n-1``.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of full batches in an epoch (the remainder is dropped).

    Args:
      n: the number of training examples.
      batch_size: the global batch size.

    Returns:
      ``n // batch_size``.
    """
    return n // batch_size


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Training-example indices of global step ``step``.

    A function of ``(n, batch_size, seed, step)`` only, so a resumed run (on any number of
    processes) sees the same batches.

    Args:
      n: the number of training examples.
      batch_size: the global batch size (at most ``n``).
      seed: the run's data seed.
      step: the global step, from 0, counted over epochs.

    Returns:
      The ``batch_size`` indices ``[batch_size]`` of the step's batch.
    """
    spe = steps_per_epoch(n, batch_size)
    epoch, i = divmod(step, spe)
    return epoch_permutation(n, seed, epoch)[i * batch_size:(i + 1) * batch_size]
