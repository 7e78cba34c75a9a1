"""Input-pipeline throughput: TFDS ImageNet layout, decoded and augmented on this machine's CPU.

    python benchmarks/pipeline.py [--images 256] [--size 224] [--batch 64] [--workers 1,2]

Writes a synthetic dataset in ImageNet's TFDS layout (ImageNet's own builder, JPEGs of
375x500, the median ILSVRC2012 shape) to a temporary folder, then times the library's training
batches (random-resized crop + flip at ``--size``) and evaluation batches (resize + center crop)
for each thread count, beside the pipeline as it was before it decoded the JPEGs itself (the same
images, bit for bit), interleaved. Images per second, median of ``--repeats``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
import tempfile

import numpy as np


def write_dataset(data_dir: str, n_train: int, n_val: int) -> None:
    from PIL import Image

    from noisesnn_jax.data.tfds import write_imagenet_layout

    def jpeg(i: int) -> bytes:
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
        img = np.stack([np.sin(xx / rng.uniform(5, 40)) * 100 + 120, np.cos(yy / rng.uniform(5, 40)) * 100 + 120,
                        (xx + yy) % 256], -1)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    pool = [jpeg(i) for i in range(16)]
    write_imagenet_layout(data_dir, [(pool[i % len(pool)], i % 1000) for i in range(n_train)],
                          [(pool[i % len(pool)], i % 1000) for i in range(n_val)])


def _before(data_dir: str, size: int, workers: int):
    """The pipeline as it was before the library decoded the JPEGs itself: TFDS decodes each image
    into an array, the transforms crop that array (through a PIL copy) and standardize arithmetically.
    The same images, bit for bit (``tests/test_tfds.py``); kept here as the speed reference."""
    import tensorflow_datasets as tfds

    from noisesnn_jax.data.tfds import SPECS, TFDSDataset

    class Before(TFDSDataset):
        def _standardize(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            return (img.astype(np.float32) / 255.0 - self.mean) / self.std

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    return Before("imagenet2012", SPECS["imagenet2012"], builder.as_data_source(split="train"),
                  builder.as_data_source(split="validation"), image_size=size, workers=workers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    from noisesnn_jax import timing
    from noisesnn_jax.data.tfds import load_tfds

    out = {"size": args.size, "batch": args.batch, "jpeg": "375x500", "cpus": os.cpu_count(),
           "repeats": args.repeats, "images_per_s": {}}
    with tempfile.TemporaryDirectory() as d:
        write_dataset(d, args.images, args.batch)
        for w in (int(v) for v in args.workers.split(",")):
            cases = {}
            for name, ds in (("now", load_tfds("imagenet2012", data_dir=d, image_size=args.size, workers=w)),
                             ("before", _before(d, args.size, w))):
                steps = itertools.count()  # a new batch each call
                cases[f"train {name}"] = lambda ds=ds, steps=steps: ds.train_batch(args.batch, 0, next(steps))
                cases[f"eval {name}"] = lambda ds=ds: ds.test_examples(np.arange(args.batch))
            seconds = timing.measure(cases, args.repeats, warmup=1)  # interleaved: the ratios are fair
            out["images_per_s"][f"workers={w}"] = {k: round(args.batch / v, 1) for k, v in seconds.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
