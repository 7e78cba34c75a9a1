"""Errors a user can cause, each carrying one line that names the problem and the fix."""

from __future__ import annotations


class NoiseSNNError(Exception):
    """Base class: the message is one line a user can act on; the CLI prints it without a traceback."""


class ConfigError(NoiseSNNError, ValueError):
    """An invalid or unknown configuration value."""


class DataError(NoiseSNNError, ValueError):
    """A missing dataset or data that cannot be used (wrong shape or dtype, NaN or inf)."""


class CheckpointError(NoiseSNNError):
    """A missing, corrupt or incompatible checkpoint."""


class ExportError(NoiseSNNError, ValueError):
    """A model that cannot be exported, or a graph that cannot be imported (the message names the layer)."""
