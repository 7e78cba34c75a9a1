"""Deployment: a trained network as a NIR graph (:mod:`noisesnn_jax.interop.nir`) or as a serialized
StableHLO inference function (``jax.export``), from Python or ``noisesnn export``.

The StableHLO artifact is the jitted multi-step inference ``images [b, ...] -> logits [b, K]``
(averaged over ``T`` steps) with the batch-norm-folded weights inside it and a symbolic batch
size. Loading and running it needs JAX alone, not this package::

    from jax import export
    exported = export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(images)          # images [b, H, W, C] float32
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax.contract import Array, SpikingModel, Variables
from noisesnn_jax.errors import ExportError

FORMATS = ("nir", "stablehlo")


def stablehlo(model: SpikingModel, variables: Variables, example: Array | np.ndarray, timesteps: int, *,
              platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """The multi-step inference of ``model`` at ``timesteps`` as a ``jax.export.Exported``.

    Batch norm is folded first; the weights are constants of the function; the batch size is
    symbolic (any ``b``).

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its trained variables.
      example: an input batch ``[B, ...]``; it gives the input shape past the batch axis.
      timesteps: ``T`` of the exported network.
      platforms: the backends to lower for (``cpu``, ``cuda``, ``rocm``, ``tpu``); ``None``:
        the current one.

    Returns:
      The exported function ``images [b, ...] float32 -> logits [b, K] float32``.

    Raises:
      ExportError: invalid ``timesteps`` or ``example``, a model whose output is not ``[B, K]``,
        batch norm that cannot be folded, or a model that does not export with a symbolic batch.
      TypeError: ``model`` does not follow the model contract.
    """
    from noisesnn_jax.contract import check_inputs
    from noisesnn_jax.convert import fold_batchnorm

    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ExportError(f"timesteps={timesteps!r} is invalid; it must be an integer >= 1")
    example = np.asarray(example, np.float32)
    try:
        check_inputs(model, variables, example, timesteps)
    except ValueError as e:
        raise ExportError(str(e)) from None
    try:
        model, variables = fold_batchnorm(model, variables, example)
    except ValueError as e:
        raise ExportError(f"batch norm cannot be folded for export: {e}") from None
    variables = jax.tree_util.tree_map(jnp.asarray, variables)

    def infer(images: jax.Array) -> jax.Array:
        return model.apply(variables, images, timesteps=timesteps).astype(jnp.float32)

    dims = ", ".join(str(d) for d in example.shape[1:])
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {dims}"), jnp.float32)
    try:
        return jax.export.export(jax.jit(infer), platforms=platforms)(spec)
    except ValueError as e:
        raise ExportError(f"the model does not export with a symbolic batch size ({e})") from None


def serialize(exported: jax.export.Exported) -> bytes:
    """The bytes of an exported function (``jax.export.deserialize`` reads them back).

    Args:
      exported: the function (:func:`stablehlo`).

    Returns:
      The serialized function.

    Raises:
      ExportError: the ``flatbuffers`` package is missing.
    """
    try:
        return bytes(exported.serialize())
    except ImportError:
        raise ExportError("serializing StableHLO needs the flatbuffers package: pip install 'noisesnn-jax[export]'") \
            from None


def write_atomic(path: str, write: Callable[[str], None]) -> int:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place.

    A failed write leaves nothing at ``path`` (and an existing file there untouched); its
    ``OSError`` names ``path``.

    Args:
      path: the file to write; its folder is created if missing.
      write: writes the content to the file name it is given.

    Returns:
      The size of the written file in bytes.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None or e.filename == tmp:  # name the file the caller asked for
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.getsize(path)
