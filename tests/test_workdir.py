"""A trained workdir as a whole (:mod:`noisesnn_jax.run.workdir`): its evaluation records the
provenance and reports progress; the command's basics (``--version``, ``config``)."""

from __future__ import annotations

import jax
import pytest

from noisesnn_jax.run import cli
from noisesnn_jax.run.train import train_and_evaluate


def test_evaluation_records_provenance_and_cli_basics(tiny_config, tmp_path, capsys):
    from noisesnn_jax import __version__
    from noisesnn_jax.run.workdir import evaluate_run
    w = str(tmp_path / "w")
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, w, progress=False, log=lambda m: None)
    log: list[str] = []
    result = evaluate_run(w, (1, 4), log=log.append)
    p = result["provenance"]
    assert p["checkpoint_step"] == 1352 // 32 and p["noisesnn_jax"] == __version__ and p["jax"] == jax.__version__
    assert any(m.startswith("T=4: accuracy") for m in log)  # progress while evaluating
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert __version__ in capsys.readouterr().out
    assert cli.main(["config", "--config.train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out
    assert cli.main(["config", "--config.train.epochz=7"]) == 2
    assert "epochz" in capsys.readouterr().err
