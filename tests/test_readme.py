"""The Python examples of the README and of the documentation pages run as written, in order
(the pages continue from the README's quickstart), and the relative links of the README and the
docs resolve to files of the repository."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
PAGES = ("README.md", "docs/own-model.md", "docs/deployment.md")


def test_readme_python_example_runs():
    scope: dict = {}
    for page in PAGES:
        blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
        assert blocks, f"{page} has no python example"
        for block in blocks:
            exec(compile(block, page, "exec"), scope)
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


def test_relative_links_of_the_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses and anchors within the page
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
