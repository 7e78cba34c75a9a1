"""The training order (:mod:`noisesnn_jax.data.batching`): the batch of a step depends only on the seed
and the step, and an epoch visits each example at most once."""

from __future__ import annotations

import numpy as np

from noisesnn_jax.data import load_dataset, train_batch
from noisesnn_jax.data.batching import batch_indices, epoch_permutation, steps_per_epoch


def test_batches_depend_only_on_seed_and_step():
    d = load_dataset("digits")
    x1, y1 = train_batch(d, 64, 0, 25)
    x2, y2 = train_batch(d, 64, 0, 25)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(x1, x2)
    # the batch is the examples at the step's indices
    i = batch_indices(len(d.x_train), 64, 0, 25)
    np.testing.assert_array_equal(x1, d.x_train[i])
    np.testing.assert_array_equal(y1, d.y_train[i])


def test_an_epoch_serves_each_example_at_most_once_and_epochs_reshuffle():
    """By index, not by label: every step of an epoch takes new examples, all of them but the
    remainder are served, and the next epoch is another order."""
    n, b, seed = 1000, 64, 3
    spe = steps_per_epoch(n, b)
    assert spe == 15
    epochs = [np.concatenate([batch_indices(n, b, seed, e * spe + s) for s in range(spe)]) for e in (0, 1)]
    for idx in epochs:
        assert len(idx) == spe * b and len(np.unique(idx)) == len(idx) and 0 <= idx.min() and idx.max() < n
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(epochs[0], epoch_permutation(n, seed, 0)[:spe * b])
    assert not np.array_equal(batch_indices(n, b, seed, 0), batch_indices(n, b, seed + 1, 0))  # the seed counts
