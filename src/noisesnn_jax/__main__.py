"""``python -m noisesnn_jax`` is the ``noisesnn`` command."""

import sys

from noisesnn_jax.run.cli import main

sys.exit(main())
