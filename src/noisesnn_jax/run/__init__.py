"""Running experiments: configs, train state, checkpoints, the training loop, whole workdirs
(evaluate, early exit, export) and the ``noisesnn`` command. The layer above the core, the data
and the interop packages: nothing below imports it."""
