"""The README's Python example runs as written."""

from __future__ import annotations

import pathlib
import re


def test_readme_python_example_runs():
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["logits_t8"].shape == (4, 10)
    assert scope["train_logits"].shape == (4, 10)
    assert scope["spikes"].shape == (8, 3)
    assert scope["per_step"].shape == (8, 4, 10)
    assert scope["result"]["total"] == 4 and 0 <= scope["result"]["accuracy"] <= 1
    assert [type(scope["graph"].nodes[n]).__name__ for n in scope["graph"].nodes][-2:] == ["Affine", "Output"]
    back = scope["net_back"].apply(scope["variables_back"], scope["xs"], timesteps=8)
    assert abs(back - scope["logits_t8"]).max() < 1e-5
    assert scope["nnx_logits_t8"].shape == (4, 10)
    assert set(scope["linen_vars"]) == {"params"}
