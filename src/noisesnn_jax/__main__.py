"""``python -m noisesnn_jax`` is the ``noisesnn`` command."""

import sys

from noisesnn_jax.cli import main

sys.exit(main())
