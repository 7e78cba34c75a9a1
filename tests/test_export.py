"""Deployment (:mod:`noisesnn_jax.interop.export`): the StableHLO artifact, run by JAX alone, and
``noisesnn export`` in both formats (the NIR graph itself: tests/test_nir.py, test_nir_import.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from _helpers import trained_like  # noqa: E402
from noisesnn_jax import evaluate, models  # noqa: E402
from noisesnn_jax.interop import export  # noqa: E402
from noisesnn_jax.run import cli  # noqa: E402


def test_stablehlo_runs_with_jax_alone(tmp_path):
    model = models.CNN(channels=(4, 8), pool_after=(0,))
    x = np.asarray(jax.random.uniform(jax.random.key(3), (5, 10, 10, 1)))
    v = trained_like(model, x)
    path = tmp_path / "cnn.stablehlo"
    path.write_bytes(export.serialize(export.stablehlo(model, v, x, 8)))
    np.save(tmp_path / "x.npy", np.concatenate([x, x[:2]]))
    want = np.asarray(evaluate.predict(model, v, np.concatenate([x, x[:2]]), 8)[0])
    code = ("import sys, numpy as np\nfrom jax import export\n"
            f"e = export.deserialize(open({str(path)!r}, 'rb').read())\n"
            f"y = np.asarray(e.call(np.load({str(tmp_path / 'x.npy')!r})))\n"
            "assert 'noisesnn_jax' not in sys.modules\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, y)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6, atol=1e-6)


def test_cli_export_both_formats_and_bad_input(tiny_config, tmp_path, capsys):
    from noisesnn_jax.run import config as config_lib
    from noisesnn_jax.run.train import train_and_evaluate

    w = str(tmp_path / "run")
    tiny_config.train.epochs = 1
    train_and_evaluate(config_lib.validate(tiny_config), w, progress=False, log=lambda m: None)
    out = tmp_path / "out"
    assert cli.main(["export", "--workdir", w, "--format", "nir", "--timesteps", "8",
                     "--out", str(out / "mlp.nir")]) == 0
    assert "wrote" in capsys.readouterr().out
    graph = nir.read(str(out / "mlp.nir"))
    assert graph.metadata["timesteps"] == 8
    assert cli.main(["export", "--workdir", w, "--format", "stablehlo", "--timesteps", "4",
                     "--out", str(out / "mlp.stablehlo")]) == 0
    exported = jax.export.deserialize((out / "mlp.stablehlo").read_bytes())
    config, model, variables, ds = __import__("noisesnn_jax.run.checkpoint", fromlist=["x"]).load_run(w, log=lambda m: None)
    xb = ds.test_examples(np.arange(16))[0]
    np.testing.assert_allclose(np.asarray(exported.call(xb)), np.asarray(evaluate.predict(model, variables, xb, 4)[0]),
                               rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(out)) == ["mlp.nir", "mlp.stablehlo"]
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(json.loads(open(os.path.join(w, "config.json")).read())))
    assert cli.main(["export", "--workdir", str(tmp_path / "empty"), "--format", "nir", "--timesteps", "8",
                     "--out", str(out / "none.nir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no checkpoint" in err[0]
    assert sorted(os.listdir(out)) == ["mlp.nir", "mlp.stablehlo"]
