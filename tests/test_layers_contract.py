"""The package's floor plan, enforced: every import of every module (those inside functions too)
points down the layers of docs/design.md, so an upward import fails here instead of waiting for a
reviewer; and ``import noisesnn_jax`` loads the core alone."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).parent.parent / "src"
PKG = "noisesnn_jax"
# Layers, lowest first: a module may import its own layer or lower ones.
LAYERS = {"core": 0, "data": 1, "interop": 1, "run": 2}
# Inside the core, each module's rank: a module imports only lower ranks.
# The contract imports nothing of the package: its types (Array, Variables, SpikingModel) serve every module.
# The trace (tracing) sits below the layers, which report themselves to it.
CORE = {"errors": 0, "contract": 0, "surrogate": 1, "timing": 1, "parallel": 1, "tracing": 1, "neurons": 2, "spikes": 3,
        "layers": 4, "models": 5, "convert": 6, "ops": 6, "baselines": 6, "pieces": 6, "evaluate": 7,
        "early_exit": 8, "__init__": 9, "__main__": 10}
# Known exceptions, each with its reason (docs/development.md keeps the list).
ALLOWED = {
    # `python -m noisesnn_jax` is the command
    ("noisesnn_jax.__main__", "noisesnn_jax.run.cli"),
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in (SRC / PKG).rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)
        out[name] = p
    return out


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, anywhere in its file."""
    tree = ast.parse(path.read_text())
    is_pkg = path.stem == "__init__"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else (node.module or "")
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith(PKG):
                found.add(t)
    return found


def _layer(name: str) -> tuple[int, int]:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]], 0
    return LAYERS["core"], CORE.get(parts[-1] if len(parts) > 1 else "__init__", 99)


def test_imports_point_down_the_layers():
    modules = _modules()
    known = set(modules)
    upward = []
    for name, path in sorted(modules.items()):
        for target in sorted(_imports(name, path, known)):
            if (name, target) in ALLOWED or target == PKG:
                continue
            (la, ra), (lb, rb) = _layer(name), _layer(target)
            same_package = name.split(".")[:2] == target.split(".")[:2]
            if lb > la or (la == lb == 0 and rb >= ra) or (la == lb == 1 and not same_package):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports against the layers of docs/design.md: " + ", ".join(upward)
    assert all(m.split(".")[-1] in CORE for m in modules if len(m.split(".")) == 2 and m.split(".")[1] not in LAYERS), \
        "a new core module needs its rank in CORE"


def test_import_loads_the_core_alone():
    code = ("import sys, noisesnn_jax; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('optax', 'orbax', 'tensorflow_datasets', 'ml_collections', 'matplotlib', 'sklearn', 'nir')"
            " or m.startswith(('noisesnn_jax.run', 'noisesnn_jax.data', 'noisesnn_jax.interop'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
