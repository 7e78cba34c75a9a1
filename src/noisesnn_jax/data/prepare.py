"""Offline preparation of TFDS datasets, and where prepared datasets live.

``mnist`` and ``fashion_mnist`` are written from their four original idx files with no network and
no TensorFlow (:func:`prepare_idx`, ``make prepare DATASET=fashion_mnist``; Debian's
``dataset-fashion-mnist`` package installs the files). :func:`write_layout` feeds given examples to
a dataset's own TFDS builder, so the result reads exactly like an online build
(:func:`write_imagenet_layout`: a stand-in ImageNet for pipeline tests and benchmarks). Other
datasets are downloaded (or, for ImageNet, read from the two ILSVRC2012 tars) by TFDS, which needs
TensorFlow: the ``prepare`` extra and ``make prepare DATASET=...`` / ``make prepare-imagenet
MANUAL_DIR=...`` (:func:`prepare_command`). Reading is :mod:`noisesnn_jax.data.tfds`.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Sequence

import numpy as np

from noisesnn_jax.errors import DataError


def resolve_data_dir(data_dir: str = "") -> str:
    """The folder TFDS datasets are read from.

    Args:
      data_dir: the folder; ``""`` takes ``$TFDS_DATA_DIR``, else TFDS's default
        ``~/tensorflow_datasets``.

    Returns:
      The folder, with ``~`` expanded.
    """
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "") or "~/tensorflow_datasets")


def prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares ``name`` into ``data_dir`` in the format this library reads.

    Args:
      name: a TFDS dataset name.
      data_dir: the folder to prepare it in.

    Returns:
      A ``make`` command line.
    """
    if name == "imagenet2012":
        return (f"make prepare-imagenet MANUAL_DIR=<folder with ILSVRC2012_img_train.tar and "
                f"ILSVRC2012_img_val.tar> DATA_DIR={data_dir}")
    return f"make prepare DATASET={name} DATA_DIR={data_dir}"


def write_layout(name: str, data_dir: str, splits: dict[str, Sequence[dict]]) -> str:
    """Write examples as the prepared TFDS dataset ``name`` (ArrayRecord) under ``data_dir``.

    The dataset's own TFDS builder (its features, version, split names and file names) is fed
    ``splits`` (``{split: [example dict]}``, images as encoded PNG/JPEG bytes) instead of its
    download, so the result reads exactly like an online build. Needs ``tensorflow-datasets``, not
    TensorFlow. TFDS writes into a temporary folder and renames it when complete, so an
    interrupted write leaves nothing that looks prepared.

    Args:
      name: a TFDS dataset name.
      data_dir: the TFDS data folder.
      splits: ``{split: [example dict]}`` with the builder's features (images as encoded
        PNG/JPEG bytes).

    Returns:
      The dataset's version folder.
    """
    import tensorflow_datasets as tfds

    class _Given(tfds.builder_cls(name), skip_registration=True):
        def _split_generators(self, dl_manager):
            return {split: self._examples(split) for split in splits}

        def _examples(self, split):
            for i, example in enumerate(splits[split]):
                yield f"{split}-{i}", {k: io.BytesIO(v) if isinstance(v, bytes) else v for k, v in example.items()}

    _Given.name = name
    builder = _Given(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.join(data_dir, "manual")))
    return os.fspath(builder.data_dir)


def write_imagenet_layout(data_dir: str, train: Sequence[tuple[bytes, int]],
                          validation: Sequence[tuple[bytes, int]]) -> str:
    """Write ``(jpeg_bytes, label)`` examples as a prepared ``imagenet2012`` under ``data_dir``.

    The layout ``make prepare-imagenet`` produces, so the data pipeline, a launch or a benchmark
    can run end to end without the real dataset (see :func:`write_layout`).

    Args:
      data_dir: the TFDS data folder.
      train: the ``train`` split's ``(jpeg_bytes, label)`` examples.
      validation: the ``validation`` split's examples.

    Returns:
      The dataset's version folder.
    """
    return write_layout("imagenet2012", data_dir, {
        split: [{"image": jpeg, "label": int(label), "file_name": f"{split}_{i:08d}.JPEG"}
                for i, (jpeg, label) in enumerate(examples)]
        for split, examples in (("train", train), ("validation", validation))})


# ----------------------------------------------------------------------------- idx files (MNIST family)

IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_COUNTS = {"train": 60_000, "test": 10_000}
IDX_DATASETS = ("mnist", "fashion_mnist")
# Where Debian's ``dataset-fashion-mnist`` package installs the four files.
DEBIAN_SOURCE = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
IDX_HOWTO = {"fashion_mnist": "install Debian's package (apt-get install dataset-fashion-mnist) or download the "
                              "four files from the Fashion-MNIST repository (github.com/zalandoresearch/fashion-mnist)",
             "mnist": "download the four files of the MNIST database"}


def read_idx(path: str, images: bool) -> np.ndarray:
    """One gzipped idx file: images ``[N, 28, 28]`` uint8 (magic 2051) or labels ``[N]`` (magic 2049).

    Args:
      path: the ``.gz`` file.
      images: an image file (else a label file).

    Returns:
      uint8 images ``[N, 28, 28]`` or labels ``[N]`` (a read-only view of the file's data).

    Raises:
      DataError: the file is missing, not gzip, truncated or of the wrong kind.
    """
    magic, dims = (2051, 3) if images else (2049, 1)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} cannot be read as a gzipped idx file ({type(e).__name__}: {e}); "
                        f"the file is damaged, get it again") from None
    header = 4 * (1 + dims)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an idx {'image' if images else 'label'} file (magic number "
                        f"{int.from_bytes(raw[:4], 'big') if len(raw) >= 4 else 'missing'}, expected {magic})")
    shape = tuple(int.from_bytes(raw[4 * (1 + i):4 * (2 + i)], "big") for i in range(dims))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path} holds {len(raw) - header} bytes of data, its header says {shape} "
                        f"({int(np.prod(shape))} bytes): the file is truncated or damaged, get it again")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_idx_dataset(name: str, source_dir: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four original idx files of ``mnist`` or ``fashion_mnist``, read and checked.

    Args:
      name: ``mnist`` or ``fashion_mnist``.
      source_dir: the folder of the four files; ``""`` takes where Debian's package puts them
        (``fashion_mnist`` only).

    Returns:
      ``{"train": (images, labels), "test": (images, labels)}``, images uint8
      ``[N, 28, 28, 1]``, labels uint8 ``[N]``.

    Raises:
      DataError: another dataset, missing files, or files that are damaged or do not belong
        together.
    """
    if name not in IDX_DATASETS:
        raise DataError(f"dataset {name!r} is not prepared from idx files; that is {list(IDX_DATASETS)}")
    source_dir = source_dir or DEBIAN_SOURCE.get(name, "")
    files = [os.path.join(source_dir, f) for pair in IDX_FILES.values() for f in pair]
    missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if not source_dir or missing:
        raise DataError(f"dataset {name!r}: {', '.join(missing) or 'the four idx files'} not found in "
                        f"{source_dir or '(no folder given)'}; {IDX_HOWTO[name]}, then give the folder with "
                        f"SOURCE_DIR=... (make) or --source-dir (noisesnn prepare)")
    out = {}
    for split, (img_file, lbl_file) in IDX_FILES.items():
        x = read_idx(os.path.join(source_dir, img_file), images=True)
        y = read_idx(os.path.join(source_dir, lbl_file), images=False)
        if len(x) != len(y) or x.shape[1:] != (28, 28) or (y.size and int(y.max()) >= 10):
            raise DataError(f"dataset {name!r} split {split!r}: {len(x)} images of {x.shape[1:]} and {len(y)} "
                            f"labels (max {int(y.max()) if y.size else '-'}); expected 28x28 images, one label "
                            f"0..9 each: the files do not belong together, get them again")
        out[split] = (x[..., None], y)
    return out


def prepare_idx(name: str, data_dir: str = "", source_dir: str = "") -> str:
    """Prepare ``mnist`` or ``fashion_mnist`` from its four idx files, with no network and no TensorFlow.

    Writes TFDS's own dataset (the builder's features, splits and version; ArrayRecord) under
    ``data_dir``, so :func:`noisesnn_jax.data.tfds.load_tfds` and every config that names it read it like an online
    build. The files are read and checked in full before anything is written; an already
    prepared dataset is left as it is.

    Args:
      name: ``mnist`` or ``fashion_mnist``.
      data_dir: the TFDS data folder (:func:`resolve_data_dir`).
      source_dir: the folder of the four idx files (see :func:`read_idx_dataset`).

    Returns:
      The dataset's version folder.

    Raises:
      DataError: as :func:`read_idx_dataset`.
    """
    from PIL import Image

    data_dir = resolve_data_dir(data_dir)
    arrays = read_idx_dataset(name, source_dir)

    def png(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0]).save(buf, format="PNG")
        return buf.getvalue()

    return write_layout(name, data_dir, {split: [{"image": png(img), "label": int(label)} for img, label in zip(x, y)]
                                         for split, (x, y) in arrays.items()})
