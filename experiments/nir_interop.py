"""The exported NIR graph read by independent readers: the same predictions on a test set.

    python experiments/nir_interop.py --workdir runs/demo/noisy --timesteps 8 --out experiments/results

Exports the trained workdir's spiking network as NIR (``noisesnn export``), then predicts every
test image three ways at the same T and compares them with this library's own predictions:

- ``numpy``: ``tests/nir_reference.py``, a NumPy re-simulation written from NIR's node definitions;
- ``snntorch``: snnTorch's own NIR importer (``snntorch.import_nir.import_from_nir``, in the
  optional peers environment: ``make install-peers``), after the mapping step below.

The mapping step for snnTorch (what the graph's metadata says, applied to what its importer builds):
- its importer turns an IF node into ``snn.Leaky(beta=0.9, init_hidden=False)``: set ``beta = 1`` (an
  integrator) and ``init_hidden = True`` (so that the layer passes its spikes on, not a
  ``(spikes, membrane)`` pair);
- it fires on ``mem > threshold`` as NIR writes; this library fires on ``v >= theta``: the threshold
  becomes the float just below theta (the same comparison in float32);
- it resets by subtraction (its default), the graph's ``reset = subtract``, but its importer sets
  ``reset_delay=False``, whose guard against a double reset skips the subtraction when the
  membrane was still above threshold after the previous step's reset (a residual above theta);
  with ``reset_delay=True`` (snnTorch's own default) its membrane is this library's charged
  potential ``m`` and the dynamics are the same: set it;
- it starts every membrane at 0: set it to the node's ``v_init`` before the first step;
- it passes ``Flatten``'s dims to ``torch.nn.Flatten`` unchanged, while NIR's dims exclude the batch
  axis: add one to them.

Writes the graph to ``<workdir>/export/nir_interop.nir`` and ``nir_interop.json``, ``nir_interop.md``
to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _reference():
    path = os.path.join(os.path.dirname(HERE), "tests", "nir_reference.py")
    spec = importlib.util.spec_from_file_location("nir_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def snntorch_predict(graph, images_nchw: np.ndarray, timesteps: int, batch_size: int = 500) -> np.ndarray:
    """Predictions of snnTorch's import of ``graph`` (after the mapping step of this module's docstring)."""
    import torch
    from snntorch import Leaky
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    neurons = {}
    for name, mod in net.named_modules():
        if isinstance(mod, Leaky):
            node = graph.nodes[name]
            if type(node).__name__ != "IF":
                raise ValueError(f"{name}: this mapping covers IF nodes; got {type(node).__name__}")
            theta = np.unique(node.v_threshold)
            if theta.size != 1:
                raise ValueError(f"{name}: snnTorch takes one threshold per layer")
            mod.beta = torch.tensor(1.0)
            mod.init_hidden = True  # return the spikes alone, keep the membrane inside
            mod.reset_delay = True  # subtract theta at the next step: the soft reset, see the docstring
            mod.threshold = torch.tensor(float(np.nextafter(np.float32(theta[0]), np.float32(-np.inf))))
            neurons[name] = (mod, np.asarray(node.metadata.get("v_init", 0.0), np.float32))
        elif isinstance(mod, torch.nn.Flatten):
            setattr(net, name, torch.nn.Flatten(mod.start_dim + 1, mod.end_dim if mod.end_dim < 0 else mod.end_dim + 1))
    preds = []
    with torch.no_grad():
        for start in range(0, len(images_nchw), batch_size):
            x = torch.from_numpy(np.array(images_nchw[start:start + batch_size]))
            for mod, v0 in neurons.values():
                mod.mem = torch.from_numpy(np.broadcast_to(v0, (len(x),) + v0.shape).copy())
            total = 0
            for _ in range(timesteps):
                out = net(x)
                total = total + (out[0] if isinstance(out, tuple) else out)
            preds.append(total.argmax(-1).numpy())
    return np.concatenate(preds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/demo/noisy")
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--name", default="nir_interop")
    args = p.parse_args(argv)

    import nir

    from noisesnn_jax import evaluate, timing
    from noisesnn_jax.run.checkpoint import restore_run
    from noisesnn_jax.run.workdir import export_run, spiking_network

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.workdir, "export", f"{args.name}.nir")  # beside the run, not in the results
    written = export_run(args.workdir, "nir", args.timesteps, path, log=lambda m: None)
    config, model, variables, ds, step = restore_run(args.workdir, log=lambda m: None)
    model, variables, _ = spiking_network(config, model, variables, ds)
    x, y = ds.test_examples(np.arange(ds.num_test))
    x = np.asarray(x, np.float32)
    from noisesnn_jax.convert import fold_batchnorm
    folded, fv = fold_batchnorm(model, variables, x[:8])
    ours = np.concatenate([np.asarray(evaluate.predict(folded, fv, x[i:i + 500], args.timesteps)[0]).argmax(-1)
                           for i in range(0, len(x), 500)])
    graph = nir.read(path)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    readers = {}
    t0 = time.perf_counter()
    readers["numpy (tests/nir_reference.py)"] = _reference().predict(graph, nchw, args.timesteps)
    print(f"numpy reference: {time.perf_counter() - t0:.1f}s")
    try:
        import snntorch  # noqa: F401
        t0 = time.perf_counter()
        readers["snntorch.import_nir.import_from_nir"] = snntorch_predict(graph, nchw, args.timesteps)
        print(f"snnTorch: {time.perf_counter() - t0:.1f}s")
    except ImportError:
        print("snnTorch is not installed (make install-peers); its row is skipped", file=sys.stderr)
    rows = []
    for name, pred in readers.items():
        rows.append({"reader": name, "accuracy": float(np.mean(pred == y)),
                     "same_predictions": int(np.sum(pred == ours)), "total": int(len(y))})
    result = {"workdir": args.workdir, "timesteps": args.timesteps, "checkpoint_step": int(step),
              "dataset": config.dataset.name, "model": config.model.name, "graph_bytes": written["bytes"],
              "nodes": written["nodes"], "ours_accuracy": float(np.mean(ours == y)), "readers": rows,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/nir_interop.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    md = [f"NIR graph of `{args.workdir}` ({config.model.name} on {config.dataset.name}, {written['nodes']} nodes, "
          f"{written['bytes']:,} bytes), T = {args.timesteps}, {len(y)} test images; this library: "
          f"{100 * result['ours_accuracy']:.2f}%", "",
          "| reader | accuracy (%) | same prediction as noisesnn-jax |", "|---|---:|---:|"]
    md += [f"| {r['reader']} | {100 * r['accuracy']:.2f} | {r['same_predictions']} / {r['total']} |" for r in rows]
    md += ["", f"Command: `{result['command']}`"]
    timing.write_report(args.out, args.name, result, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
