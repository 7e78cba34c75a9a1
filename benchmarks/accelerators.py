"""Accelerator plan for ResNet-34 on ImageNet from XLA's own cost and memory analysis (compile only).

    python benchmarks/accelerators.py [--out benchmarks/results] [--batch 128] [--fit-batch 64]

Each case is the library's own step for the ``make train-imagenet`` model (ResNet-34, ImageNet
stem, 224x224x3 input, 1000 classes, the recipe of ``experiments/configs/imagenet_resnet34.py``),
lowered and compiled with ``jax.jit(...).lower(...).compile()`` on abstract inputs
(``jax.ShapeDtypeStruct``): nothing is executed. Cases: our T=1 noisy training step
(``run.train.train_step``), our multi-step inference at T=4 and T=8 (batch norm folded, the
library's evaluation/predict path ``evaluate._predict`` with the batch whole, as on an
accelerator), the ReLU ANN's training step (method ``convert``) and BPTT training at T=4 and T=8
(method ``bptt``). From ``compiled.cost_analysis()`` (FLOPs, bytes accessed) and
``compiled.memory_analysis()`` (argument, output, alias and temporary bytes) it reports, per
image at the per-device batch ``--batch``: FLOPs, bytes accessed, arithmetic intensity, and the
compiled memory per device; then, for TPU v5e, TPU v5p and H100 SXM, the roofline images/s per
chip, ``1 / max(flops / peak_flops, bytes / peak_bandwidth)``, and the largest per-device batch
whose memory fits the chip's HBM, from a straight line ``a + b * batch`` through the memory
compiled at ``--fit-batch`` and ``--batch``.

The numbers come from the backend this runs on (the CPU here); the report says which of them a TPU
or GPU backend may estimate differently, and how to check them on the hardware (run this script
there: it compiles for whatever backend JAX has). Writes ``accelerators.json`` and
``accelerators.md`` under ``--out``, each replaced whole.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import functools
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from noisesnn_jax import evaluate, timing
from noisesnn_jax.convert import fold_batchnorm
from noisesnn_jax.neurons import SCAN_UNROLL
from noisesnn_jax.run import config as config_lib
from noisesnn_jax.run.state import build_model, create_state, make_optimizer, variable_shapes
from noisesnn_jax.run.train import train_step

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGENET_CONFIG = os.path.join(HERE, "..", "experiments", "configs", "imagenet_resnet34.py")
IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC2012 training split (only the learning-rate schedule's length uses it)


@dataclasses.dataclass(frozen=True)
class Device:
    """One accelerator chip (= one JAX device) as its vendor publishes it."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s per chip
    hbm_bandwidth: float  # bytes/s per chip
    hbm_bytes: float  # HBM capacity per chip, bytes (decimal GB as published)
    source: str
    note: str = ""

    @property
    def ridge(self) -> float:
        """FLOP/byte above which a step is compute-bound on this chip."""
        return self.peak_flops / self.hbm_bandwidth


DEVICES: tuple[Device, ...] = (
    Device("TPU v5e", 197e12, 819e9, 16e9, "https://cloud.google.com/tpu/docs/v5e",
           "197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s per chip (one TensorCore, one JAX device)"),
    Device("TPU v5p", 459e12, 2765e9, 95e9, "https://cloud.google.com/tpu/docs/v5p",
           "459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s per chip (two TensorCores as one JAX device)"),
    Device("NVIDIA H100 SXM", 989e12, 3.35e12, 80e9, "https://www.nvidia.com/en-us/data-center/h100/",
           "BF16 Tensor Core 1,979 TFLOP/s with sparsity, so 989 dense; 80 GB HBM3 at 3.35 TB/s"),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One compiled step: a training step of ``method``, or inference at ``timesteps``."""

    label: str
    method: str  # run.config.METHODS: noisy, convert (ReLU ANN), bptt
    kind: str  # "train" or "infer"
    timesteps: int = 1


CASES: dict[str, Case] = {
    "ours_t1_train": Case("ours: T=1 noisy training step", "noisy", "train", 1),
    "ours_infer_t4": Case("ours: inference T=4 (BN folded)", "noisy", "infer", 4),
    "ours_infer_t8": Case("ours: inference T=8 (BN folded)", "noisy", "infer", 8),
    "relu_train": Case("ReLU ANN training step (convert)", "convert", "train", 1),
    "bptt_t4_train": Case("BPTT training step T=4", "bptt", "train", 4),
    "bptt_t8_train": Case("BPTT training step T=8", "bptt", "train", 8),
}


# ---------------------------------------------------------------------------------------------
# Arithmetic: the roofline and the memory fit (tests/test_accelerators.py checks them by hand).

def roofline(flops: float, bytes_accessed: float, device: Device) -> dict[str, Any]:
    """Roofline throughput of a step costing ``flops`` and ``bytes_accessed`` per image.

    Time per image is ``max(flops / peak_flops, bytes / peak_bandwidth)``: whichever of the two
    units is the bottleneck, each at its published peak (an upper bound on real throughput).
    """
    compute_s = flops / device.peak_flops
    memory_s = bytes_accessed / device.hbm_bandwidth
    seconds = max(compute_s, memory_s)
    return {"images_per_s": 1.0 / seconds if seconds > 0 else math.inf,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "compute_s_per_image": compute_s, "memory_s_per_image": memory_s}


def linear_fit(batch_a: int, bytes_a: float, batch_b: int, bytes_b: float) -> tuple[float, float]:
    """``(a, b)`` of the line ``bytes = a + b * batch`` through two compiled batch sizes."""
    if batch_a == batch_b:
        raise ValueError(f"a line needs two different batch sizes; got {batch_a} twice")
    slope = (bytes_b - bytes_a) / (batch_b - batch_a)
    return bytes_b - slope * batch_b, slope


def max_batch(intercept: float, slope: float, capacity: float) -> int:
    """The largest batch with ``intercept + slope * batch <= capacity`` (0: not even one image)."""
    if slope <= 0:
        return 0 if intercept > capacity else sys.maxsize
    return max(0, math.floor((capacity - intercept) / slope))


# ---------------------------------------------------------------------------------------------
# Lowering the library's steps on abstract inputs.

def _case_config(config: Any, case: Case, remat: bool) -> Any:
    c = copy.deepcopy(config)
    c.method = case.method
    if case.method == "bptt":
        c.train.timesteps = case.timesteps
    c.train.remat = bool(remat) and case.kind == "train"
    return c


def _folded(model: Any, variables: Any, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The batch-norm-folded model and the shapes of its variables (``convert.fold_batchnorm``,
    traced abstractly: no parameter is allocated)."""
    box: dict[str, Any] = {}

    def fold(v, x):
        box["model"], folded = fold_batchnorm(model, v, x)
        return folded

    shapes = jax.eval_shape(fold, variables, jax.ShapeDtypeStruct((1,) + input_shape, jnp.float32))
    return box["model"], shapes


def lower_case(config: Any, case: Case, *, input_shape: tuple[int, ...], num_classes: int, batch: int,
               remat: bool = False) -> Any:
    """``jax.stages.Lowered`` of ``case`` at a per-device ``batch`` on abstract inputs.

    Training: the jitted ``run.train.train_step`` (state donated, as in ``noisesnn train`` on one
    device) with the config's optimizer and label smoothing; the train state's shapes come from
    ``run.state.create_state`` under ``jax.eval_shape``. Inference: ``evaluate._predict`` of the
    folded model with the batch whole (``microbatch=0``), as the library runs it on an accelerator.
    """
    c = _case_config(config, case, remat)
    config_lib.validate(c)
    model = build_model(c, num_classes)
    images = jax.ShapeDtypeStruct((batch,) + tuple(input_shape), jnp.float32)
    if case.kind == "infer":
        fmodel, fvars = _folded(model, variable_shapes(model, input_shape), tuple(input_shape))
        return evaluate._predict.lower(fmodel, fvars, images, case.timesteps, None, 0)
    if case.kind != "train":
        raise ValueError(f"case kind {case.kind!r} is invalid; use train or infer")
    spe = max(1, IMAGENET_TRAIN_IMAGES // c.train.batch_size)
    tx = make_optimizer(c, spe * c.train.epochs, spe)
    state = jax.eval_shape(lambda k: create_state(model, tx, tuple(input_shape), k), jax.random.key(0))
    timesteps = c.train.timesteps if c.method == "bptt" else 1  # as run.train does
    step = jax.jit(functools.partial(train_step, num_classes=num_classes, label_smoothing=c.train.label_smoothing,
                                     timesteps=timesteps), donate_argnums=0)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return step.lower(state, images, labels, key)


_CONV = re.compile(r"=\s*(\w+)\[[^\]]*\][^=]*?\sconvolution\(")
_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8, "u64": 8}
_INSTR = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)\s+([\w\-]+)\((.*?)\)(.*)$")
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _shape_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
        if dtype in _ITEM_BYTES:
            total += math.prod(int(d) for d in dims.split(",") if d) * _ITEM_BYTES[dtype]
    return total


def kernel_bytes(hlo: str) -> dict[str, Any] | None:
    """Bytes (operands + outputs) of the entry computation's kernels, split into convolution/matmul
    kernels and the rest (element-wise, reductions, copies), parsed from the compiled HLO text: how
    XLA's cost analysis counts bytes per fused kernel, to show where they are. ``None`` if the text
    has no entry computation this parser reads."""
    blocks = hlo.split("\n\n")
    heavy = set()
    entry = None
    for block in blocks:
        head = block.lstrip().split("\n", 1)[0]
        if head.startswith("ENTRY"):
            entry = block
        elif " convolution(" in block or " dot(" in block:
            m = re.match(r"%?([\w.\-]+)", head)
            if m:
                heavy.add(m.group(1))
    if entry is None:
        return None
    shapes: dict[str, int] = {}
    conv = other = 0
    for line in entry.splitlines()[1:]:
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op, operands, rest = m.groups()
        shapes[name] = _shape_bytes(shape)
        if op in _NO_TRAFFIC:
            continue
        n = shapes[name] + sum(shapes.get(a.strip().split(" ")[-1].lstrip("%"), 0) for a in operands.split(","))
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        if op in ("convolution", "dot") or (calls and calls.group(1) in heavy):
            conv += n
        else:
            other += n
    return {"convolution_bytes": conv, "other_bytes": other}


def analyze(lowered: Any) -> dict[str, Any]:
    """Compile ``lowered``; XLA's cost analysis, memory analysis, and the convolutions' dtypes."""
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    cost = cost or {}
    mem = compiled.memory_analysis()

    def m(name: str) -> int:
        return int(getattr(mem, name, 0) or 0) if mem is not None else 0

    hlo = compiled.as_text() or ""
    convs: dict[str, int] = {}
    for dtype in _CONV.findall(hlo):
        convs[dtype] = convs.get(dtype, 0) + 1
    arg, out, alias, temp = (m("argument_size_in_bytes"), m("output_size_in_bytes"), m("alias_size_in_bytes"),
                             m("temp_size_in_bytes"))
    code = m("generated_code_size_in_bytes")
    return {"flops": float(cost.get("flops", float("nan"))),
            "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
            "transcendentals": float(cost.get("transcendentals", 0.0)),
            "argument_bytes": arg, "output_bytes": out, "alias_bytes": alias, "temp_bytes": temp,
            "generated_code_bytes": code,
            # what the device holds while the step runs: inputs, outputs not aliased to a donated
            # input, XLA's temporaries and the program
            "memory_bytes": arg + out - alias + temp + code,
            "convolution_dtypes": convs, "kernel_bytes": kernel_bytes(hlo), "compile_s": round(compile_s, 1)}


# ---------------------------------------------------------------------------------------------
# The plan.

def plan(config: Any, cases: dict[str, Case], *, input_shape: Sequence[int], num_classes: int, batch: int,
         fit_batch: int | None, devices: Sequence[Device] = DEVICES, remat: bool = False,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile every case at ``fit_batch`` and ``batch``; per-image costs at ``batch``, memory at
    ``batch``, the memory line through both, the roofline and the largest batch on each device.

    Returns a JSON-serializable dict: ``cases[name]`` with ``per_image`` (flops, bytes accessed,
    intensity), ``at_batch`` and ``at_fit_batch`` (:func:`analyze`), ``memory_fit`` (a, b) and
    ``devices[device name]`` (:func:`roofline` and ``max_batch``).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if fit_batch is not None and fit_batch == batch:
        raise ValueError(f"--fit-batch {fit_batch} equals --batch; pick another size for the memory line")
    sizes = [b for b in (fit_batch, batch) if b is not None]
    out: dict[str, Any] = {}
    total = len(cases) * len(sizes)
    done = 0
    for name, case in cases.items():
        res: dict[str, Any] = {"label": case.label, "method": case.method, "kind": case.kind,
                               "timesteps": case.timesteps}
        for b in sizes:
            done += 1
            t0 = time.perf_counter()
            lowered = lower_case(config, case, input_shape=input_shape, num_classes=num_classes, batch=b,
                                 remat=remat)
            lower_s = time.perf_counter() - t0
            a = analyze(lowered)
            a["lower_s"] = round(lower_s, 1)
            res["at_batch" if b == batch else "at_fit_batch"] = a
            log(f"[{done}/{total}] {name} batch {b}: lowered {lower_s:.1f}s, compiled {a['compile_s']:.1f}s; "
                f"{a['flops'] / b / 1e9:.2f} GFLOP/image, {a['bytes_accessed'] / b / 1e6:.1f} MB/image, "
                f"memory {a['memory_bytes'] / 2 ** 30:.2f} GiB")
        at = res["at_batch"]
        flops, nbytes = at["flops"] / batch, at["bytes_accessed"] / batch
        res["per_image"] = {"flops": flops, "bytes_accessed": nbytes,
                            "intensity": flops / nbytes if nbytes else math.inf}
        if fit_batch is not None:
            a0, b0 = linear_fit(fit_batch, res["at_fit_batch"]["memory_bytes"], batch, at["memory_bytes"])
            res["memory_fit"] = {"a_bytes": a0, "b_bytes_per_image": b0, "batches": [fit_batch, batch]}
        res["devices"] = {}
        for d in devices:
            r = roofline(flops, nbytes, d)
            r["memory_fits_at_batch"] = at["memory_bytes"] <= d.hbm_bytes
            if fit_batch is not None:
                r["max_batch"] = max_batch(res["memory_fit"]["a_bytes"], res["memory_fit"]["b_bytes_per_image"],
                                           d.hbm_bytes)
            res["devices"][d.name] = r
        out[name] = res
    return {"batch": batch, "fit_batch": fit_batch, "input_shape": list(input_shape), "num_classes": num_classes,
            "devices": {d.name: dataclasses.asdict(d) | {"ridge_flop_per_byte": d.ridge} for d in devices},
            "cases": out}


# ---------------------------------------------------------------------------------------------
# The report.

def _gib(x: float) -> str:
    return f"{x / 2 ** 30:.2f}"


def _share(k: dict[str, int] | None) -> str:
    total = (k or {}).get("convolution_bytes", 0) + (k or {}).get("other_bytes", 0)
    return f"{100 * k['convolution_bytes'] / total:.0f}%" if total else "-"


def _batch(n: int) -> str:
    return "unbounded" if n == sys.maxsize else str(n)


def render(r: dict[str, Any]) -> str:
    """The markdown report of a :func:`plan` result (with the run's metadata)."""
    B, fb = r["batch"], r["fit_batch"]
    cases, devs = r["cases"], r["devices"]
    lines = [
        "# Accelerator plan: ResNet-34, ImageNet 224x224, 1000 classes (from XLA's cost analysis)", "",
        f"Compiled (never run) {r['date']} on {r['machine']} by `{r['command']}` in {r['wall_s']:.0f} s "
        f"({r['wall_s'] / 60:.1f} min; the slowest compile: {r['slowest_compile']}). Model: "
        f"`experiments/configs/imagenet_resnet34.py` (`make train-imagenet`), compute dtype **{r['dtype']}** "
        f"(`--config.model.dtype={r['dtype']}`; parameters, optimizer state and input images stay float32), "
        f"optimizer {r['optimizer']}, label smoothing {r['label_smoothing']}, noise {r['noise']}, "
        f"remat {r['remat']}. XLA backend: **{r['backend']}**.", "",
        f"Per image: the compiled step's cost analysis at a per-device batch of {B}, divided by {B} (the "
        f"training steps include the optimizer update, amortized over the {B} images). Memory: "
        f"argument + output - alias (the donated train state) + temporary bytes of the program compiled at "
        f"batch {B}, per device (data parallelism keeps a full copy of the state on every device).", "",
        f"| case | GFLOP / image | MB accessed / image | FLOP / byte | bytes in conv kernels | "
        f"memory at batch {B} (GiB) | temp (GiB) | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases.values():
        p, at = c["per_image"], c["at_batch"]
        lines.append(f"| {c['label']} | {p['flops'] / 1e9:.1f} | {p['bytes_accessed'] / 1e6:.0f} | "
                     f"{p['intensity']:.1f} | {_share(at.get('kernel_bytes'))} | {_gib(at['memory_bytes'])} | "
                     f"{_gib(at['temp_bytes'])} | {at['compile_s']:.0f} |")
    lines += ["", "\"Bytes in conv kernels\": the share of the bytes (operands + outputs per kernel, as the cost "
                  "analysis counts them) in the compiled program's convolution and matmul kernels, parsed from its "
                  "HLO; the rest is element-wise work (neuron updates, noise, batch norm, the optimizer), "
                  f"reductions and copies. The neuron scans of T <= {SCAN_UNROLL} steps are unrolled "
                  "(`neurons.SCAN_UNROLL`), so no loop body is counted once for T steps."]
    ours = cases.get("ours_t1_train")
    if ours:
        ref, ref_mem = ours["per_image"], ours.get("memory_fit", {}).get("b_bytes_per_image")
        lines += ["", "Relative to our T=1 training step (the ratios depend less on the backend than the absolute "
                      "numbers do):", "",
                  "| case | FLOPs | bytes accessed | memory per image (b below) |", "|---|---:|---:|---:|"]
        for c in cases.values():
            b = c.get("memory_fit", {}).get("b_bytes_per_image")
            mem = f"{b / ref_mem:.2f}x" if b and ref_mem else "-"
            lines.append(f"| {c['label']} | {c['per_image']['flops'] / ref['flops']:.2f}x | "
                         f"{c['per_image']['bytes_accessed'] / ref['bytes_accessed']:.2f}x | {mem} |")
    lines += ["", "## Devices (published peaks, per chip)", "",
              "| device | peak bf16 dense (TFLOP/s) | HBM bandwidth (GB/s) | HBM (GB) | ridge (FLOP/byte) | source |",
              "|---|---:|---:|---:|---:|---|"]
    for name, d in devs.items():
        lines.append(f"| {name} | {d['peak_flops'] / 1e12:.0f} | {d['hbm_bandwidth'] / 1e9:.0f} | "
                     f"{d['hbm_bytes'] / 1e9:.0f} | {d['ridge_flop_per_byte']:.0f} | <{d['source']}> ({d['note']}) |")
    lines += ["", "HBM capacities are taken as decimal GB as published (16e9, 95e9, 80e9 bytes); a runtime keeps "
                  "some of it for itself, so leave headroom under the batch sizes below.", "",
              f"## Roofline: images/s per chip at a per-device batch of {B}", "",
              "`1 / max(FLOPs / peak FLOP/s, bytes / HBM bandwidth)` per image, from the numbers above; "
              "**C** compute-bound, **M** memory-bound. In brackets: the compute-only bound (FLOPs at peak), "
              "the ceiling if the accelerator's compiler moves fewer bytes than the CPU backend counts. "
              "An upper bound on real throughput (no input pipeline, no gradient all-reduce, peaks are not "
              "sustained). With the CPU's byte counts every case sits far below the chips' ridge points "
              "(memory-bound); those counts are mostly pessimistic for a bf16 accelerator program (next sections; "
              "TPU padding can push the other way), so read each cell as a range: the first number is roughly "
              "the low end, the bracket the high end.", "",
              "| case | " + " | ".join(devs) + " |", "|---|" + "---:|" * len(devs)]
    for c in cases.values():
        cells = []
        for name in devs:
            x = c["devices"][name]
            cap = 1.0 / x["compute_s_per_image"] if x["compute_s_per_image"] else math.inf
            fits = "" if x["memory_fits_at_batch"] else ", batch does not fit"
            cells.append(f"{x['images_per_s']:,.0f} **{x['bound'][0].upper()}** ({cap:,.0f}{fits})")
        lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    if fb is not None:
        lines += ["", "## Largest per-device batch that fits HBM", "",
                  f"Memory is fitted as `a + b * batch` through the programs compiled at batch {fb} and {B} "
                  f"(a straight line through two points; XLA's buffer assignment is not exactly linear in the "
                  f"batch, so check the chosen size by compiling it).", "",
                  "| case | a (GiB) | b (MiB / image) | " + " | ".join(devs) + " |",
                  "|---|---:|---:|" + "---:|" * len(devs)]
        for c in cases.values():
            f = c["memory_fit"]
            lines.append(f"| {c['label']} | {_gib(f['a_bytes'])} | {f['b_bytes_per_image'] / 2 ** 20:.1f} | "
                         + " | ".join(_batch(c["devices"][n]["max_batch"]) for n in devs) + " |")
    convs = {k: c["at_batch"]["convolution_dtypes"] for k, c in cases.items()}
    conv_note = "; ".join(f"{cases[k]['label']}: " + ", ".join(f"{n} {t}" for t, n in sorted(v.items()))
                          for k, v in convs.items() if v)
    lines += ["", "## What the CPU backend may count differently from TPU and GPU backends", "",
              f"These numbers are what XLA's **{r['backend']}** compiler reports for its own program. A TPU or "
              "GPU compiler optimizes the same StableHLO into a different program, so:", "",
              "- **FLOPs** are the most portable number: they count the convolutions' and matmuls' "
              "multiply-adds, which every backend must do. Differences come from rematerialization (a backend "
              "that recomputes activations to save memory adds FLOPs) and from algebraic rewrites.",
              "- **Bytes accessed** is the least portable. `HloCostAnalysis` sums, per fused kernel, the bytes of "
              "its operands and outputs; what counts as one kernel is the backend's fusion decision. The TPU "
              "and GPU compilers fuse more aggressively (elementwise work into convolutions' prologues and "
              "epilogues, multi-output fusions), which removes round trips to HBM that the CPU program makes. "
              "Here most of the counted bytes are outside the convolution kernels (first table), so this is "
              "where a TPU or GPU program can differ most.",
              "- **dtype of the convolutions.** The CPU backend has no bf16 convolution: it converts the "
              f"operands and computes in float32 (convolutions in the compiled programs by output dtype: "
              f"{conv_note or 'none found'}). Their activations then move as 4-byte values where a TPU or GPU "
              "moves 2-byte bf16, so the CPU's bytes per image and temporary memory are inflated for the "
              "bf16 recipe; the arithmetic intensities above are correspondingly pessimistic.",
              "- **Layout and padding.** TPUs tile arrays in (8, 128) blocks on the last two dimensions (bf16: "
              "(16, 128)): a small minor dimension, such as ResNet-34's 64-channel first stage or the 3-channel "
              "input, is padded to 128 lanes unless the compiler picks another layout, which raises bytes, "
              "memory and MXU work there; the CPU pads nothing. On GPUs cuDNN may want "
              "channel counts that are multiples of 8 for Tensor Cores (all of ResNet-34's are, except the "
              "input).",
              "- **Convolution algorithm.** cuDNN picks an algorithm per convolution by autotuning (implicit "
              "GEMM, Winograd, FFT), with workspace memory that XLA's GPU compiler allocates as temporaries; "
              "Winograd does fewer multiplies than the FLOPs counted here. The TPU maps convolutions onto the "
              "MXU directly. Neither is what the CPU's library convolutions (YNNPACK or Eigen) do.",
              "- **Memory** is the CPU's buffer assignment: its liveness analysis, scheduling and fusion "
              "decide which activations coexist. The TPU compiler schedules for memory (and may rematerialize "
              "to fit), the GPU compiler adds cuDNN workspaces and its own scheduling; both keep bf16 "
              "activations as bf16. Expect the accelerators' temporaries to be smaller than these for the "
              "bf16 recipe, and the fitted maximum batches to be conservative.",
              "- **Not in a one-device program:** the gradient all-reduce of data parallelism (the float32 "
              "gradients, about 87 MB for ResNet-34, over ICI or NVLink every step), the input pipeline "
              "(host JPEG decoding, docs/datasets.md), and the host-to-device copy of the images.", "",
              "## Checking the plan on the hardware", "",
              "1. Run this script on the accelerator host (`python benchmarks/accelerators.py --out <dir>`): "
              "it compiles for whatever backend JAX finds, so the tables then hold the TPU's or GPU's own cost "
              "and memory analysis (compile only, a few minutes); compare them with these.",
              "2. Measure the steps: `python benchmarks/throughput.py --model resnet34 --image 224 --classes 1000 "
              f"--dtype {r['dtype']} --batch {B} --timesteps 8` (T=1 training and T=8 evaluation images/s "
              "over every device, with the device's peak memory from `memory_stats()`; its step is the zoo model's "
              "default noise with plain SGD, a close stand-in for the recipe's); divide by the device "
              "count and compare with the roofline rows. Measured over roofline is the efficiency to expect "
              "when planning a run.",
              "3. Check the largest batch by compiling it (`jax.jit(step).lower(...).compile().memory_analysis()`"
              " on the device) and by one real step: an out-of-memory error names the allocation.",
              "4. For where the time goes, capture a profile of a few steps (`jax.profiler.trace`) and look at "
              "the per-kernel FLOP rate and HBM bandwidth in TensorBoard's profile plugin or XProf."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("benchmarks", "results"),
                   help="folder for accelerators.json and accelerators.md")
    p.add_argument("--batch", type=int, default=128, help="per-device batch of the report (default 128)")
    p.add_argument("--fit-batch", type=int, default=64,
                   help="second batch size for the memory line a + b * batch (default 64; 0: no fit)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                   help="compute dtype, --config.model.dtype (default bfloat16)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--remat", action="store_true", help="compile the training steps with --config.train.remat=True")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite accelerators.md from the accelerators.json under --out (no compiling)")
    args = p.parse_args(argv)
    if args.render_only:
        import json
        with open(os.path.join(args.out, "accelerators.json")) as f:
            result = json.load(f)
        timing.write_report(args.out, "accelerators", result, render(result))
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    if args.batch < 1 or args.fit_batch < 0:
        p.error("--batch must be >= 1 and --fit-batch >= 0")
    fit = args.fit_batch or None
    config = config_lib.load_config(IMAGENET_CONFIG)
    config.model.dtype = args.dtype
    command = "python benchmarks/accelerators.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print(f"{len(names)} cases x {2 if fit else 1} batch sizes on {jax.default_backend()} ({timing.machine()}); "
          f"compile only", flush=True)
    t0 = time.perf_counter()
    result = plan(config, {n: CASES[n] for n in names}, input_shape=(224, 224, 3), num_classes=1000,
                  batch=args.batch, fit_batch=fit, remat=args.remat,
                  log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    slowest = max(((c["label"], k, c[k]["compile_s"]) for c in result["cases"].values()
                   for k in ("at_batch", "at_fit_batch") if k in c), key=lambda x: x[2])
    result.update({
        "date": datetime.date.today().isoformat(), "machine": timing.machine(), "backend": jax.default_backend(),
        "command": command.strip(), "wall_s": round(wall, 1), "dtype": args.dtype, "remat": args.remat,
        "optimizer": f"{config.train.optimizer} (momentum {config.train.momentum}, nesterov, weight decay "
                     f"{config.train.weight_decay})",
        "label_smoothing": config.train.label_smoothing,
        "noise": f"{config.noise.kind} (sampler {config.noise.sampler})",
        "slowest_compile": f"{slowest[0]} at batch {args.batch if slowest[1] == 'at_batch' else fit}, {slowest[2]:.0f} s",
    })
    timing.write_report(args.out, "accelerators", result, render(result))
    print(f"wrote {os.path.join(args.out, 'accelerators.json')} and accelerators.md in {wall:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
