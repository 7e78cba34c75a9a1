"""``python -m benchmarks.peers`` (from the repository root): every installed peer at batch 64."""

from . import main

main()
