"""Throughput of a zoo model on fake data over every device: T=1 noisy training and T=N evaluation.

    python benchmarks/throughput.py --model resnet18 --image 32 --batch 64 [--timesteps 8]
    JAX_NUM_CPU_DEVICES=8 python benchmarks/throughput.py ...     (8 fake CPU devices)

Images per second, median of ``--repeats`` after warm-up; the train step is the library's
data-parallel step (``noisesnn_jax.parallel``), evaluation the jitted multi-step predict with
batch norm folded, through the library's evaluation (sharded over the devices when there are
several), from host arrays to the correct count. Prints one JSON line, with the device's peak
memory where it reports one (GPU, TPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from noisesnn_jax import convert, evaluate, parallel, timing
from noisesnn_jax.models import MODELS
from noisesnn_jax.run.state import create_state, variables_of
from noisesnn_jax.run.train import train_step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--stem", default=None, help="cifar or imagenet (default: by image size)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    stem = args.stem or ("imagenet" if args.image >= 64 else "cifar")
    kw = dict(num_classes=args.classes, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    if args.model.startswith("resnet"):
        kw["stem"] = stem
    model = MODELS[args.model](**kw)
    mesh = parallel.make_mesh()
    parallel.check_divisible(args.batch, mesh)
    shape = (args.image, args.image, 3)
    state = parallel.replicate(mesh, create_state(model, optax.sgd(0.1, 0.9), shape, jax.random.key(0)))
    step = parallel.shard_train_step(mesh, functools.partial(train_step, num_classes=args.classes))
    rng = np.random.default_rng(0)
    x = parallel.global_batch(mesh, rng.random((args.batch,) + shape, dtype=np.float32))
    y = parallel.global_batch(mesh, (np.arange(args.batch) % args.classes).astype(np.int32))
    key = jax.random.key(1)

    box = {"s": state}

    def train():
        box["s"], m = step(box["s"], x, y, key)
        jax.block_until_ready(m)

    t_train = timing.measure({"case": train}, args.repeats)["case"]
    fm, fv = convert.fold_batchnorm(model, variables_of(box["s"]), x)
    xe = rng.random((args.batch,) + shape, dtype=np.float32)
    ye = (np.arange(args.batch) % args.classes).astype(np.int32)
    eval_mesh = mesh if mesh.devices.size > 1 else None
    t_eval = timing.measure({"case": lambda: evaluate.evaluate(fm, fv, xe, ye, args.timesteps, batch_size=args.batch,
                                                                mesh=eval_mesh)}, args.repeats)["case"]
    stats = jax.devices()[0].memory_stats() or {}  # accelerators report it; the CPU does not
    peak = stats.get("peak_bytes_in_use")
    print(json.dumps({"peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
                      "model": args.model, "stem": stem, "image": args.image, "batch": args.batch,
                      "dtype": args.dtype, "devices": jax.device_count(), "platform": jax.devices()[0].platform,
                      "train_t1_images_per_s": round(args.batch / t_train, 1),
                      f"eval_t{args.timesteps}_images_per_s": round(args.batch / t_eval, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
