"""The training order (:mod:`noisesnn_jax.data.batching`): the batch of a step depends only on the seed
and the step, and an epoch visits each example at most once."""

from __future__ import annotations

import numpy as np

from noisesnn_jax.data import load_dataset, train_batch


def test_batches_depend_only_on_seed_and_step():
    d = load_dataset("digits")
    x1, y1 = train_batch(d, 64, 0, 25)
    x2, y2 = train_batch(d, 64, 0, 25)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(x1, x2)
    # an epoch visits each example at most once, and epochs differ in order
    spe = len(d.x_train) // 64
    idx0 = np.concatenate([train_batch(d, 64, 0, s)[1] for s in range(spe)])
    assert len(idx0) == spe * 64
    assert not np.array_equal(train_batch(d, 64, 0, 0)[1], train_batch(d, 64, 0, spe)[1])
