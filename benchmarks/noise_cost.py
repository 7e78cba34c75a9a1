"""Where the default noise's extra cost goes (``make noise-cost``).

    python benchmarks/noise_cost.py [--batch 64] [--repeats 21] [--out benchmarks/results]

The demo CNN's training step (``noisesnn_jax.models.CNN`` defaults, 28x28x1, Adam), compiled
five ways and timed side by side in one process (interleaved round-robin, each timed call right
after an untimed call of the same case; ``timing.measure(settle=1)``):

- the ReLU ANN, and the deterministic spike (noise ``none``): no noise at all;
- the default noise (triangular, ``hash`` sampler: two rounds of an integer mixer per element);
- the same with one mixing round, and with the random bits replaced by a constant: these two are
  not samplers of the library (the constant draws no noise) but they split the default's extra
  cost into the random bits and the rest (the distribution function in the forward pass, its
  density in the backward pass).

For each case it also records XLA's cost analysis of the compiled step (FLOPs, bytes accessed)
and, per element of the activations, the element-wise operations in the fusions that compute the
spike in the forward pass and its gradient in the backward pass (counted in the compiled HLO, by
the source names XLA keeps in each fusion's metadata). Writes ``noise_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from noisesnn_jax import spikes, timing
from noisesnn_jax.models import CNN
from noisesnn_jax.run.state import create_state
from noisesnn_jax.run.train import train_step
from noisesnn_jax.spikes import Noise


def _one_round(key, shape):
    """``mix(index ^ seed) >> 8``: half the default hash's work (not the library's stream)."""
    seed = jax.random.bits(key, (1,), jnp.uint32)[0]
    idx = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return (spikes._mix32(idx ^ seed) >> 8).astype(jnp.float32)


def _constant_bits(key, shape):
    """No random bits at all: ``u`` fixed at the middle of its range."""
    return jnp.full(shape, 2.0 ** 23, jnp.float32)


CASES = {  # name -> (model, the hash the spike draws its bits from)
    "ReLU ANN": (lambda: CNN(activation="relu"), None),
    "spike, no noise": (lambda: CNN(noise=Noise(kind="none")), None),
    "default noise (triangular, hash)": (CNN, None),
    "  the same, one mixing round": (CNN, _one_round),
    "  the same, constant bits": (CNN, _constant_bits),
}


def _fusion_ops(hlo: str) -> dict[str, int]:
    """Operations (not parameters or constants) in the fusions of the activations' forward and backward passes, summed
    over the blocks: ``{"forward": n, "backward": n}`` (fusions named after ``act{i}`` by XLA's
    metadata; ``transpose(jvp(...))`` marks the backward pass)."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^(%\S+) \([^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}
    out = {"forward": 0, "backward": 0}
    for line in hlo[hlo.index("\nENTRY"):].splitlines():
        m = re.search(r"fusion\(.*calls=(%[^,\s]+).*op_name=\"([^\"]+)\"", line)
        if not m or not re.search(r"/act\d+/", m.group(2)):
            continue
        ops = sum(op not in ("parameter", "constant")
                  for op in re.findall(r"= \S+ ([a-z][\w-]*)\(", bodies.get(m.group(1), "")))
        out["backward" if "transpose(" in m.group(2) else "forward"] += ops
    return out


def measure(batch: int, repeats: int) -> dict:
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).integers(0, 10, batch), jnp.int32)
    runs, info = {}, {}
    default_hash = spikes.hash_uniform
    import optax

    try:
        for name, (make, bits) in CASES.items():
            jax.clear_caches()  # equal models would reuse the trace of the previous case
            spikes.hash_uniform = bits or default_hash
            state = create_state(make(), optax.adam(1e-3), (28, 28, 1), jax.random.key(0))
            step = jax.jit(functools.partial(train_step, num_classes=10, timesteps=1), donate_argnums=0)
            compiled = step.lower(state, x, y, jax.random.key(1)).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            info[name] = {"gflop": cost.get("flops", 0.0) / 1e9, "mb_accessed": cost.get("bytes accessed", 0.0) / 1e6,
                          "activation_fusion_ops": _fusion_ops(compiled.as_text())}
            box = {"s": state}

            def run(compiled=compiled, box=box) -> None:
                box["s"], m = compiled(box["s"], x, y, jax.random.key(1))
                jax.block_until_ready(m)

            runs[name] = run
    finally:
        spikes.hash_uniform = default_hash
    ms = {k: 1e3 * v for k, v in timing.measure(runs, repeats, warmup=3, settle=1).items()}
    relu = ms["ReLU ANN"]
    for name in CASES:
        info[name].update(ms=ms[name], ratio=ms[name] / relu)
    return {"date": datetime.date.today().isoformat(), "machine": timing.machine(), "batch": batch,
            "repeats": repeats, "command": " ".join(["python benchmarks/noise_cost.py", *sys.argv[1:]]),
            "cases": info}


def render(r: dict) -> str:
    lines = [f"Measured {r['date']} on {r['machine']} by `{r['command']}`: the demo CNN's training step at batch "
             f"{r['batch']}, median of {r['repeats']} interleaved repeats, each timed call right after an untimed call "
             "of the same case.", "",
             "| training step | ms | ratio to ReLU | GFLOP | MB accessed | ops in the activations' forward fusions | "
             "... backward fusions |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in r["cases"].items():
        ops = c["activation_fusion_ops"]
        lines.append(f"| {name.strip()} | {c['ms']:.1f} | {c['ratio']:.3f} | {c['gflop']:.2f} | {c['mb_accessed']:.0f} | "
                     f"{ops['forward']} | {ops['backward']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    r = measure(args.batch, args.repeats)
    timing.write_report(args.out, "noise_cost", r, render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
