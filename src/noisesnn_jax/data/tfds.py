"""TFDS datasets read without TensorFlow: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``,
``imagenet2012``.

A prepared TFDS dataset in the ArrayRecord format is opened with TFDS's random-access data source
(``builder.as_data_source``), which decodes images with PIL and needs no TensorFlow. Each process
reads only the rows of each global batch that it feeds to its own devices; decoding and
augmentation run in a thread pool (PIL releases the GIL) while the devices compute the previous
step (JAX dispatch is asynchronous).

Augmentation is numpy/PIL and deterministic: example ``j`` of the batch of global step ``k`` is
augmented with ``numpy.random.default_rng([seed, k, j])``, so a resumed run, and a run on any
number of processes, sees the same images.

- CIFAR and Fashion-MNIST: zero-pad 4 pixels, random crop back to the image size, horizontal
  flip; evaluation uses the image as is.
- ImageNet: random-resized crop (area 8%..100%, aspect ratio 3/4..4/3, 10 tries then a center
  crop) to ``image_size`` and horizontal flip; evaluation resizes the shorter side to
  ``image_size / 0.875`` and takes the center ``image_size`` crop. Its JPEGs stay encoded in the
  data source (``SkipDecoding``); the transform decodes each one (PIL) and crops and resizes the
  decoded image directly, and standardization is a table lookup. Both give the same bits as TFDS's
  decoding followed by the array operations (tested), at 1.4-1.5 times the images per second on
  one thread (``benchmarks/pipeline.py``).
- MNIST: no augmentation (a flipped digit is another digit).

Small datasets (MNIST, Fashion-MNIST, CIFAR) are decoded once into memory (uint8) on first use,
so an epoch costs augmentation only, not a PNG decode per image.

Preparing a dataset (offline from idx files, or with TFDS and TensorFlow) and where prepared
datasets live are :mod:`noisesnn_jax.data.prepare`; its names are importable from here too.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import io
import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from noisesnn_jax.data.batching import batch_indices

# Preparation, and where prepared datasets live; its names stay importable from this module.
from noisesnn_jax.data.prepare import (  # noqa: F401 - re-exported
    DEBIAN_SOURCE,
    IDX_COUNTS,
    IDX_DATASETS,
    IDX_FILES,
    IDX_HOWTO,
    prepare_command,
    prepare_idx,
    read_idx,
    read_idx_dataset,
    resolve_data_dir,
    write_imagenet_layout,
    write_layout,
)
from noisesnn_jax.errors import DataError

if TYPE_CHECKING:
    from PIL import Image


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the pipeline needs to know of a TFDS dataset.

    Attributes:
      train_split: the TFDS split trained on.
      test_split: the TFDS split evaluated on.
      num_classes: ``K``.
      image_size: the default side of the model input.
      channels: image channels, 1 or 3.
      mean: per-channel mean of the images scaled to ``[0, 1]``.
      std: per-channel std of the images scaled to ``[0, 1]``.
      augment: the default training augmentation: ``pad_crop_flip``, ``imagenet`` or ``none``.
      in_memory: decode the whole split once and keep it as uint8.
    """

    train_split: str
    test_split: str
    num_classes: int
    image_size: int  # default side of the model input
    channels: int
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    augment: str  # "pad_crop_flip", "imagenet" or "none"
    in_memory: bool = False  # decode the whole split once, keep it as uint8


SPECS: dict[str, Spec] = {
    "cifar10": Spec("train", "test", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    "pad_crop_flip", True),
    "cifar100": Spec("train", "test", 100, 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                     "pad_crop_flip", True),
    "mnist": Spec("train", "test", 10, 28, 1, (0.1307,), (0.3081,), "none", True),
    "fashion_mnist": Spec("train", "test", 10, 28, 1, (0.2860,), (0.3530,), "pad_crop_flip", True),
    "imagenet2012": Spec("train", "validation", 1000, 224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                         "imagenet"),
}
# Training augmentations: CIFAR-style 4-pixel pad, crop and mirror; mirror only; none; ImageNet's
# random-resized crop and mirror (with a centre-crop evaluation transform).
AUGMENTS = ("pad_crop_flip", "flip", "none", "imagenet")
EVAL_CROP_FRACTION = 0.875  # ImageNet evaluation: resize to size / 0.875, center crop size


def _pil(img: Any):
    """A PIL image of ``img`` (a PIL image as it is, or a uint8 array ``[H, W, C]``)."""
    from PIL import Image
    if isinstance(img, Image.Image):
        return img
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _size(img: Any) -> tuple[int, int]:
    """``(height, width)`` of a PIL image (from its header: nothing is decoded) or an array."""
    if hasattr(img, "shape"):
        return int(img.shape[0]), int(img.shape[1])
    return int(img.size[1]), int(img.size[0])


def _channels(img: Any) -> int:
    return int(img.shape[-1]) if hasattr(img, "shape") else len(img.getbands())


def _from_pil(pil, channels: int) -> np.ndarray:
    a = np.asarray(pil)
    return a[..., None] if channels == 1 else a


def _resize_box(img: Any, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop ``box = (left, top, right, bottom)`` of ``img`` (an array or a PIL image) and resize it
    to ``size x size`` (bilinear): uint8 ``[size, size, C]``."""
    from PIL import Image
    return _from_pil(_pil(img).resize((size, size), Image.BILINEAR, box=box), _channels(img))


def random_resized_crop(img: np.ndarray | Image.Image, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """Inception-style crop: a random area fraction and aspect ratio, resized to ``size x size``.

    After 10 draws that do not fit, the central crop with the aspect ratio clamped to ``ratio``.

    Args:
      img: a uint8 image ``[H, W, C]`` or a PIL image (the same pixels give the same crop).
      rng: the generator the crop is drawn from.
      size: the output side.
      scale: the range of the crop's area, as a fraction of the image's.
      ratio: the range of the crop's aspect ratio (width / height).

    Returns:
      The crop, uint8 ``[size, size, C]`` (bilinear resize).
    """
    h, w = _size(img)
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return _resize_box(img, (x0, y0, x0 + cw, y0 + ch), size)
    aspect = w / h  # fallback: the central crop with the aspect ratio clamped to ``ratio``
    cw, ch = (w, round(w / ratio[0])) if aspect < ratio[0] else (
        (round(h * ratio[1]), h) if aspect > ratio[1] else (w, h))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return _resize_box(img, (x0, y0, x0 + cw, y0 + ch), size)


def center_crop(img: np.ndarray | Image.Image, size: int, fraction: float = EVAL_CROP_FRACTION) -> np.ndarray:
    """Resize the shorter side to ``size / fraction`` and take the central ``size x size``.

    Args:
      img: a uint8 image ``[H, W, C]`` or a PIL image.
      size: the output side.
      fraction: the crop's side as a fraction of the shorter side.

    Returns:
      The crop, uint8 ``[size, size, C]``.
    """
    h, w = _size(img)
    side = min(h, w) * fraction  # the crop's side in input pixels
    x0, y0 = (w - side) / 2, (h - side) / 2
    return _resize_box(img, (x0, y0, x0 + side, y0 + side), size)


def decode_image(data: bytes, channels: int) -> Image.Image:
    """The PIL image of an encoded example (JPEG or PNG bytes), in RGB (``channels=3``) or L (1).

    Decoding waits until the pixels are used, so the crop is drawn from the header's size first.
    Other modes (CMYK, palette, grey in an RGB dataset) are converted, as TFDS's preparation does.

    Args:
      data: the encoded bytes (or a bytes-like object).
      channels: 3 (RGB) or 1 (L).

    Returns:
      A lazily decoded ``PIL.Image.Image``.
    """
    from PIL import Image
    pil = Image.open(io.BytesIO(bytes(data)))
    mode = "RGB" if channels == 3 else "L"
    if pil.mode != mode:
        pil = pil.convert(mode)
    return pil


def standardize_table(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The standardized value of every uint8 value, per channel, for :func:`standardize_uint8`.

    Computed by the same float32 operations as the arithmetic, so a lookup gives the same bits.

    Args:
      mean: per-channel mean ``[C]``, of images scaled to ``[0, 1]``.
      std: per-channel std ``[C]``.

    Returns:
      ``(v / 255 - mean) / std`` for ``v = 0..255``, float32 ``[256, C]``.
    """
    return (np.arange(256, dtype=np.float32)[:, None] / 255.0 - mean) / std


def standardize_uint8(img: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Standardize a uint8 image by table lookup.

    About three times faster than the arithmetic on a float copy, and bit for bit the same.

    Args:
      img: a uint8 image ``[H, W, C]``.
      table: :func:`standardize_table` ``[256, C]``.
      out: a float32 ``[H, W, C]`` array to write into; ``None`` allocates one.

    Returns:
      The standardized image, float32 ``[H, W, C]`` (``out`` when given).
    """
    out = np.empty(img.shape, np.float32) if out is None else out
    for c in range(img.shape[-1]):
        np.take(table[:, c], img[..., c], out=out[..., c], mode="clip")  # uint8 never clips
    return out


def crop_flip_draws(batch_size: int, seed: int, step: int, pad: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The random crop offsets and flips of global step ``step``.

    Drawn for the whole global batch, so every process slices the same draws.

    Args:
      batch_size: ``B``, the global batch size.
      seed: the run's data seed.
      step: the global step.
      pad: the padding of :func:`pad_crop_flip`.

    Returns:
      ``(offsets [B, 2], flips [B])``: offsets in ``0..2*pad`` (rows, columns) and booleans.
    """
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, 2 * pad + 1, size=(batch_size, 2)), rng.random(batch_size) < 0.5


def pad_crop_flip(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, pad: int = 4) -> np.ndarray:
    """CIFAR-style augmentation: zero-pad, crop back to the image size, mirror.

    Args:
      images: the batch ``[N, H, W, C]``.
      offsets: ``[N, 2]``, the crops' (row, column) in the padded image, each in ``0..2*pad``.
      flips: ``[N]`` booleans: mirror left-right.
      pad: pixels of zero padding on each side.

    Returns:
      The augmented batch ``[N, H, W, C]``, of ``images``' dtype.
    """
    n, h, w = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ys = offsets[:, :1] + np.arange(h)
    xs = offsets[:, 1:] + np.arange(w)
    xs = np.where(flips[:, None], xs[:, ::-1], xs)
    return padded[np.arange(n)[:, None, None], ys[:, :, None], xs[:, None, :]]


class _Decoded:
    """A data source decoded once into memory: ``images [N, H, W, C]`` uint8 and ``labels [N]``.

    Decoding happens on the first call of :meth:`arrays`, ``chunk`` examples at a time.
    """

    def __init__(self, source, chunk: int = 4096, repair: str = "the prepared files are damaged, prepare the "
                                                                  "dataset again") -> None:
        self._source, self._chunk, self._repair = source, chunk, repair
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._lock = threading.Lock()  # the loader's threads ask at once; one decodes

    def __len__(self) -> int:
        return len(self._source)

    def arrays(self, name: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of the whole split, decoded and checked on the first call."""
        with self._lock:
            if self._images is None:
                self._images, self._labels = self._decode(name, channels)
        return self._images, self._labels

    def _decode(self, name: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
        n, images, labels = len(self._source), [], []
        for start in range(0, n, self._chunk):
            try:
                examples = self._source.__getitems__(list(range(start, min(n, start + self._chunk))))
            except Exception as e:  # truncated file, bad record, undecodable image
                raise DataError(f"dataset {name!r}: examples {start}..{min(n, start + self._chunk) - 1} cannot be "
                                f"read ({type(e).__name__}: {str(e)[:200]}); {self._repair}") from None
            images += [np.asarray(ex["image"]) for ex in examples]
            labels += [int(ex["label"]) for ex in examples]
        kinds = {(im.dtype, im.shape) for im in images}
        if len(kinds) != 1 or images[0].dtype != np.uint8 or images[0].ndim != 3 or images[0].shape[-1] != channels:
            raise DataError(f"dataset {name!r}: images are {sorted(map(str, kinds))[:3]}, expected uint8 images of "
                            f"one shape with {channels} channels; prepare it again")
        return np.stack(images), np.asarray(labels, np.int32)


def _check_indices(name: str, indices: np.ndarray, size: int) -> None:
    if len(indices) and (int(np.min(indices)) < 0 or int(np.max(indices)) >= size):
        raise IndexError(f"dataset {name!r}: indices must be in [0, {size}), "
                         f"got {int(np.min(indices))}..{int(np.max(indices))}")


class TFDSDataset:
    """A prepared TFDS dataset behind the library's dataset interface (see :mod:`noisesnn_jax.data`).

    Built by :func:`load_tfds`. It has the attributes of a :class:`noisesnn_jax.data.Dataset` and
    its arguments' (``spec``, ``image_size``, ``workers``, ``encoded``, ``validation``,
    ``augment``: the one in effect), and ``mean``, ``std``.

    Args:
      name: the dataset's name.
      spec: its :class:`Spec`.
      train_source: the training split: a random-access source (``len`` and ``__getitems__`` of
        example dicts with ``image`` and ``label``), e.g. TFDS's ``as_data_source``.
      test_source: the test split, likewise.
      image_size: the model input's side; 0 takes ``spec.image_size``.
      workers: decoding threads; 0 takes ``min(16, cores)``.
      encoded: the sources give encoded image bytes, decoded here (PIL).
      validation: hold out the last that many training examples as the evaluation split (0: the
        test split).
      augment: the training augmentation, one of :data:`AUGMENTS`; ``""`` takes the dataset's.
      data_dir: the TFDS data folder the dataset was read from (named in the command an error
        about damaged files gives).
      files: ``{"train": [paths], "test": [paths]}``, the prepared files of each split (named in
        errors about damaged files).

    Raises:
      DataError: ``augment`` does not fit the dataset, or ``validation`` is out of range.
    """

    is_image = True

    def __init__(self, name: str, spec: Spec, train_source, test_source, *, image_size: int = 0,
                 workers: int = 0, encoded: bool = False, validation: int = 0, augment: str = "",
                 data_dir: str = "", files: dict[str, list[str]] | None = None) -> None:
        self.name = name
        self.spec = spec
        if augment and (augment not in AUGMENTS or (augment == "imagenet") != (spec.augment == "imagenet")):
            allowed = ["imagenet"] if spec.augment == "imagenet" else [a for a in AUGMENTS if a != "imagenet"]
            raise DataError(f"augment={augment!r} is invalid for dataset {name!r}; choose one of {allowed} "
                            f"(or leave it empty for the dataset's default, {spec.augment!r})")
        self.augment = augment or spec.augment
        if not (isinstance(validation, int) and (validation == 0 or 0 < validation < len(train_source))):
            raise DataError(f"validation={validation!r} is invalid for dataset {name!r}: hold out between 0 and "
                            f"{len(train_source) - 1} of its {len(train_source)} training examples")
        # The last ``validation`` training examples are held out: the evaluation split of runs that
        # choose recipes, so that the test split is only seen by the final tables.
        self.validation = validation
        self.num_classes = spec.num_classes
        self.image_size = int(image_size) or spec.image_size
        self.mean = np.asarray(spec.mean, np.float32)
        self.std = np.asarray(spec.std, np.float32)
        self._table = standardize_table(self.mean, self.std)
        self.encoded = encoded  # the sources give encoded image bytes, decoded here (PIL)
        self._data_dir, self._files = data_dir, dict(files or {})
        if spec.in_memory:
            train_source = _Decoded(train_source, repair=self._repair("train"))
            test_source = _Decoded(test_source, repair=self._repair("test"))
        self._train, self._test = train_source, test_source
        self.workers = int(workers) or min(16, os.cpu_count() or 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape, ``(S, S, C)``."""
        return (self.image_size, self.image_size, self.spec.channels)

    @property
    def num_train(self) -> int:
        """The number of training examples (the held-out ones excluded)."""
        return len(self._train) - self.validation

    @property
    def num_test(self) -> int:
        """The number of evaluation examples (the held-out training examples, else the test split)."""
        return self.validation or len(self._test)

    def _evaluation_split(self, indices: np.ndarray) -> tuple[Any, np.ndarray]:
        """The source and source indices of evaluation examples ``indices``."""
        indices = np.asarray(indices)
        if not self.validation:
            return self._test, indices
        _check_indices(self.name, indices, self.validation)
        return self._train, indices + self.num_train

    # --------------------------------------------------------------------------- transforms

    def _resized(self, img: np.ndarray) -> np.ndarray:
        if img.shape[:2] != (self.image_size, self.image_size):
            img = _resize_box(img, (0, 0, img.shape[1], img.shape[0]), self.image_size)
        return img

    def _standardize(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(img / 255 - mean) / std`` as float32 (into ``out`` when given, for uint8 images)."""
        if img.dtype == np.uint8:
            return standardize_uint8(img, self._table, out)
        return (img.astype(np.float32) / 255.0 - self.mean) / self.std

    def imagenet_train_transform(self, img: np.ndarray | Image.Image, rng: np.random.Generator,
                                 out: np.ndarray | None = None) -> np.ndarray:
        """Random-resized crop and flip, standardized (ImageNet training).

        Args:
          img: a uint8 image ``[H, W, C]`` or a PIL image.
          rng: the generator the crop and the flip are drawn from.
          out: a float32 ``[S, S, C]`` array to write into; ``None`` allocates one.

        Returns:
          The image, float32 ``[S, S, C]``.
        """
        img = random_resized_crop(img, rng, self.image_size)
        return self._standardize(img[:, ::-1] if rng.random() < 0.5 else img, out)

    def eval_transform(self, img: np.ndarray | Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """Standardized evaluation image (ImageNet: resize and center crop; else resize if needed).

        Args:
          img: a uint8 image ``[H, W, C]`` (or, for ImageNet, a PIL image).
          out: a float32 ``[S, S, C]`` array to write into, for uint8 images; ``None`` allocates one.

        Returns:
          The image, float32 ``[S, S, C]``.
        """
        if self.augment == "imagenet":
            return self._standardize(center_crop(img, self.image_size), out)
        return self._standardize(self._resized(img), out)

    # --------------------------------------------------------------------------- batches

    def train_batch(self, batch_size: int, seed: int, step: int,
                    rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the augmented training batch of global step ``step``.

        Args:
          batch_size: the global batch size.
          seed: the run's data seed.
          step: the global step, from 0.
          rows: the rows of the global batch to load (this process's).

        Returns:
          ``(x, y)``: images ``[b, S, S, C]`` float32, standardized, and labels ``[b]`` int32.

        Raises:
          DataError: an example cannot be read or decoded (damaged files).
        """
        idx = batch_indices(self.num_train, batch_size, seed, step)
        if self.augment == "imagenet":  # per example: the crop's draws vary in number
            positions = np.arange(len(idx))[rows]
            return self._load(self._train, idx[rows], lambda img, j, out: self.imagenet_train_transform(
                img, np.random.default_rng([seed, step, int(positions[j])]), out))
        x, y = self._pixels(self._train, idx[rows])
        if self.augment in ("pad_crop_flip", "flip"):
            offsets, flips = crop_flip_draws(len(idx), seed, step)
            if self.augment == "flip":
                offsets = np.full_like(offsets, 4)  # the centre crop of the padded image: no shift
            x = pad_crop_flip(x, offsets[rows], flips[rows])
        return self._standardize(x), y

    def test_examples(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation images and labels at ``indices``.

        Args:
          indices: ``[N]``, each in ``0..num_test-1``: of the test split, or of the held-out
            training examples when ``validation`` is set.

        Returns:
          ``(x, y)``: images ``[N, S, S, C]`` float32, standardized, and labels ``[N]`` int32.

        Raises:
          IndexError: an index is out of range.
          DataError: an example cannot be read or decoded (damaged files).
        """
        source, indices = self._evaluation_split(indices)
        if self.augment == "imagenet":
            return self._load(source, indices, lambda img, j, out: self.eval_transform(img, out))
        x, y = self._pixels(source, indices)
        return self._standardize(x), y

    def _pixels(self, source, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unstandardized images ``[N, S, S, C]`` (float32 pixel values) and labels at ``indices``."""
        if isinstance(source, _Decoded) and self.image_size == self.spec.image_size:
            _check_indices(self.name, indices, len(source))
            images, labels = source.arrays(self.name, self.spec.channels)
            return images[indices].astype(np.float32), labels[indices].astype(np.int32)
        return self._load(source, indices, lambda img, j, out: self._resized(img))

    def _repair(self, split: str) -> str:
        """What an error about damaged ``split`` ("train" or "test") files says: which files, and
        the command that prepares them again."""
        files = self._files.get(split, [])
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        return (f"the prepared {split} files are damaged{f' ({shown})' if files else ''}; prepare the dataset "
                f"again: {prepare_command(self.name, resolve_data_dir(self._data_dir))}")

    def _split_of(self, source) -> str:
        return "train" if source is self._train else "test"

    def _decoded(self, data: Any, index: int, split: str = "train"):
        """The PIL image of an encoded example; an undecodable one is a :class:`DataError`."""
        try:
            return decode_image(data, self.spec.channels)
        except Exception as e:  # not an image, truncated, unsupported mode
            raise DataError(f"dataset {self.name!r}: example {index} is not a readable image "
                            f"({type(e).__name__}: {str(e)[:200]}); {self._repair(split)}") from None

    def _load(self, source, indices: np.ndarray,
              transform: Callable[[Any, int, np.ndarray | None], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Images ``transform(image, position, out)`` and labels of ``indices``; a transform may write
        into ``out`` (the batch's row) and return it."""
        n = len(indices)
        _check_indices(self.name, indices, len(source))
        split = self._split_of(source)
        x = np.empty((n,) + self.input_shape, np.float32)
        y = np.empty((n,), np.int32)

        def work(chunk: np.ndarray) -> None:
            keys = [int(indices[j]) for j in chunk]
            try:
                examples = source.__getitems__(keys)
            except Exception as e:  # truncated file, bad record, undecodable image
                shown = ", ".join(map(str, keys[:4])) + (", ..." if len(keys) > 4 else "")
                raise DataError(f"dataset {self.name!r}: examples [{shown}] cannot be read "
                                f"({type(e).__name__}: {str(e)[:200]}); {self._repair(split)}") from None
            for j, ex in zip(chunk, examples):
                try:
                    one(j, ex)
                except DataError:
                    raise
                except Exception as e:  # a failing transform: name the example, keep the cause
                    raise DataError(f"dataset {self.name!r}: example {int(indices[j])} (row {int(j)} of the batch) "
                                    f"failed in a data worker: {type(e).__name__}: {str(e)[:200]}") from e

        def one(j: int, ex: dict) -> None:
            """Decode, transform and store one example in row ``j``."""
            if self.encoded:
                img = self._decoded(ex["image"], int(indices[j]), split)
                out = transform(img, int(j), x[j])
                if out.base is not x:  # the transform did not write into the batch
                    x[j] = out
            else:
                img = np.asarray(ex["image"])
                if img.ndim != 3 or img.shape[-1] != self.spec.channels or img.dtype != np.uint8:
                    raise DataError(f"dataset {self.name!r}: example {int(indices[j])} is {img.dtype}{list(img.shape)}, "
                                    f"expected uint8 images with {self.spec.channels} channels; prepare it again")
                x[j] = transform(img, int(j), None)
            y[j] = int(ex["label"])

        chunks = [c for c in np.array_split(np.arange(n), max(1, min(n, self.workers))) if len(c)]
        if len(chunks) <= 1:
            for c in chunks:
                work(c)
        else:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="noisesnn-data")
            futures = [self._pool.submit(work, c) for c in chunks]
            concurrent.futures.wait(futures)  # every worker has stopped before an error is raised
            for f in futures:
                f.result()
        return x, y


def load_tfds(name: str, data_dir: str = "", image_size: int = 0, workers: int = 0, validation: int = 0,
              augment: str = "") -> TFDSDataset:
    """Open a prepared TFDS dataset (ArrayRecord) for training and evaluation, without TensorFlow.

    ``validation``: hold out the last that many training examples as the evaluation split (the
    test split is then not read). ``augment``: one of :data:`AUGMENTS` ("" = the dataset's own).

    Args:
      name: a dataset of :data:`SPECS`.
      data_dir: the TFDS data folder (:func:`~noisesnn_jax.data.prepare.resolve_data_dir`).
      image_size: the model input's side; 0 takes the dataset's.
      workers: decoding threads; 0 takes ``min(16, cores)``.
      validation: hold out the last that many training examples as the evaluation split (the
        test split is then not read).
      augment: one of :data:`AUGMENTS`; ``""`` takes the dataset's own.

    Returns:
      The dataset.

    Raises:
      DataError: an unknown name, a missing or unprepared dataset, one in the TFRecord format,
        a missing ``tensorflow-datasets`` install (the message says where it looked and the
        command that fixes it), or an invalid ``augment`` or ``validation``.
    """
    if name not in SPECS:
        raise DataError(f"dataset {name!r} is not a TFDS dataset this library reads; choose one of {sorted(SPECS)}")
    spec = SPECS[name]
    data_dir = resolve_data_dir(data_dir)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(f"dataset {name!r} is read through tensorflow-datasets, which is not installed; "
                        f"pip install tensorflow-datasets array-record") from None
    where = (f"looked in {os.path.join(data_dir, name)} (the data dir comes from --config.dataset.data_dir, "
             f"else $TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        from etils import epath  # a tensorflow-datasets dependency; also understands cloud paths
        prepared = (epath.Path(builder.data_dir) / "dataset_info.json").exists()
    except Exception as e:  # unreadable dataset_info.json, permissions, ...
        raise DataError(f"dataset {name!r} cannot be opened ({type(e).__name__}: {str(e)[:200]}); {where}") from None
    if not prepared:
        raise DataError(f"dataset {name!r} is not prepared: {where}. Prepare it with: "
                        f"{prepare_command(name, data_dir)}, or point --config.dataset.data_dir at the "
                        f"folder that holds it")
    fmt = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if fmt not in ("array_record", "parquet"):
        version = os.path.basename(os.fspath(builder.data_dir).rstrip("/"))
        raise DataError(f"dataset {name!r} in {builder.data_dir} is stored as {fmt}, which cannot be read "
                        f"without TensorFlow; rebuild it: {prepare_command(name, '<NEW_DIR>')}, or convert "
                        f"it (TensorFlow needed): tfds convert_format --dataset_version_dir={builder.data_dir} "
                        f"--out_file_format=array_record --out_dir=<NEW_DIR>/{name}/{version}; then use "
                        f"--config.dataset.data_dir=<NEW_DIR>")
    # Large images stay encoded until the transform: it decodes them itself (PIL) and crops the
    # decoded image directly, without TFDS's copy into an array and back.
    encoded = spec.augment == "imagenet"
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    sources, files = [], {}
    for role, split in (("train", spec.train_split), ("test", spec.test_split)):
        if split not in builder.info.splits:
            raise DataError(f"dataset {name!r} in {builder.data_dir} has no {split!r} split "
                            f"(it has {sorted(builder.info.splits)}); re-prepare it: {prepare_command(name, data_dir)}")
        try:
            sources.append(builder.as_data_source(split=split, decoders=decoders))
            files[role] = sorted(glob.glob(os.path.join(os.fspath(builder.data_dir), f"{name}-{split}.*")))
        except Exception as e:
            raise DataError(f"dataset {name!r} split {split!r} in {builder.data_dir} cannot be read "
                            f"({type(e).__name__}: {str(e)[:200]}); re-prepare it: "
                            f"{prepare_command(name, data_dir)}") from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(f"dataset {name!r} in {builder.data_dir} lacks 'image'/'label' features; re-prepare it")
    return TFDSDataset(name, spec, sources[0], sources[1], image_size=image_size, workers=workers, encoded=encoded,
                       validation=validation, augment=augment, data_dir=data_dir, files=files)
