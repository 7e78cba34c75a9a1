"""The ``noisesnn`` command with training slowed down from a given step on.

    python tests/slow_train.py MARKER FROM_STEP noisesnn-arguments...

Tests that send SIGTERM mid-training use it: on a fast machine a small run may otherwise end
before the signal arrives. From global step FROM_STEP on, every training batch of an embedded
dataset waits 0.5 s, and the file MARKER is created, so the test knows that the run is inside
training and has many slow steps left when it sends the signal. Nothing else changes: batches,
noise and parameters are those of the plain command.
"""

from __future__ import annotations

import os
import sys
import time

from noisesnn_jax.data import ArrayDataset
from noisesnn_jax.run import cli

STEP_SECONDS = 0.5


def main(argv: list[str]) -> int:
    marker, from_step, args = argv[0], int(argv[1]), argv[2:]
    plain = ArrayDataset.train_batch

    def slow(self, batch_size, seed, step, rows=slice(None)):
        if step >= from_step:
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(step))
            time.sleep(STEP_SECONDS)
        return plain(self, batch_size, seed, step, rows)

    ArrayDataset.train_batch = slow
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
