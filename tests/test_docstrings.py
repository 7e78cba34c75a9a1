"""The API reference is complete: every public function, class and method of the package has a
Google-style docstring whose ``Args:`` names every parameter (``Attributes:`` every field of a
Flax module or dataclass) and whose ``Returns:``/``Yields:`` says what it gives back
(docs/development.md). A module whose optional dependency is missing (``nir``) is skipped."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import textwrap

import pytest

import noisesnn_jax

PKG = noisesnn_jax.__name__
# `python -m noisesnn_jax` runs the command on import.
NOT_IMPORTED = {f"{PKG}.__main__"}
# Methods whose API is the class's: Flax's `setup`, and the fields Flax adds to every module.
SKIPPED_METHODS = {"setup"}
FLAX_FIELDS = {"parent", "name"}
SECTION = re.compile(r"^(\s*)(Args|Arguments|Attributes|Returns|Yields|Raises|Example|Examples|Note|Notes)\s*:\s*$")


def _module_names() -> list[str]:
    names = [PKG]
    for info in pkgutil.walk_packages(noisesnn_jax.__path__, prefix=f"{PKG}.", onerror=lambda name: None):
        if info.name not in NOT_IMPORTED:
            names.append(info.name)
    return sorted(names)


def _import(name: str):
    """The module, or a skip when an optional dependency (not the package itself) is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith(PKG):
            pytest.skip(f"{name} needs the optional dependency {e.name}")
        raise


def sections(doc: str) -> dict[str, list[str]]:
    """A Google-style docstring's sections: ``{"Args": [entry names], "Returns": [...], ...}``."""
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        m = SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        indent, title = len(m.group(1)), m.group(2)
        title = "Args" if title == "Arguments" else title
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        entries = [b for b in body if b.strip()]
        first = min((len(b) - len(b.lstrip()) for b in entries), default=0)
        names = []
        for b in entries:
            if len(b) - len(b.lstrip()) == first:
                e = re.match(r"\s*\**([A-Za-z_][\w.]*)\s*(\(.*?\))?\s*:", b)
                names.append(e.group(1) if e else b.strip())
        out.setdefault(title, []).extend(names)
    return out


def _returns_value(func) -> tuple[bool, bool]:
    """(returns a value, is a generator), read from the function's annotation and source."""
    func = inspect.unwrap(func)
    if inspect.isgeneratorfunction(func):
        return False, True
    ann = getattr(func, "__annotations__", {}).get("return", inspect.Signature.empty)
    if ann not in (inspect.Signature.empty, None, "None", type(None)) and ann != "NoReturn":
        return True, False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False, False
    body = tree.body[0]
    stack = list(ast.iter_child_nodes(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            return True, False
        stack.extend(ast.iter_child_nodes(node))
    return False, False


def _parameters(func, skip_first: bool) -> list[str]:
    params = list(inspect.signature(inspect.unwrap(func)).parameters.values())
    if skip_first and params:
        params = params[1:]
    return [p.name for p in params]


def _check_function(qualname: str, func, skip_first: bool = False) -> list[str]:
    doc = inspect.getdoc(func)
    if not doc:
        return [f"{qualname}: no docstring"]
    problems = []
    found = sections(doc)
    missing = [p for p in _parameters(func, skip_first) if p not in found.get("Args", [])]
    if missing:
        problems.append(f"{qualname}: Args lacks {', '.join(missing)}")
    value, generator = _returns_value(func)
    if value and "Returns" not in found and "Yields" not in found:
        problems.append(f"{qualname}: no Returns section")
    if generator and "Yields" not in found:
        problems.append(f"{qualname}: no Yields section")
    return problems


def _class_fields(cls) -> list[str]:
    """The names a class is constructed with: dataclass or NamedTuple fields, else ``__init__``'s."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in FLAX_FIELDS]
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return list(cls._fields)
    if "__init__" in vars(cls) and not getattr(cls, "_is_protocol", False):
        return _parameters(vars(cls)["__init__"], skip_first=True)
    return []


def _check_class(qualname: str, cls) -> list[str]:
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    if not doc:
        return [f"{qualname}: no docstring"]
    problems = []
    found = sections(doc)
    init_doc = sections(inspect.getdoc(vars(cls)["__init__"]) or "") if "__init__" in vars(cls) else {}
    named = set(found.get("Attributes", []) + found.get("Args", []) + init_doc.get("Args", []))
    missing = [f for f in _class_fields(cls) if f not in named]
    if missing:
        problems.append(f"{qualname}: Attributes/Args lack {', '.join(missing)}")
    for name, member in vars(cls).items():
        if (name.startswith("_") and name != "__call__") or name in SKIPPED_METHODS:
            continue
        if isinstance(member, property):
            if not member.__doc__:
                problems.append(f"{qualname}.{name}: no docstring")
            continue
        skip_first = not isinstance(member, staticmethod)
        func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        # methods a framework generates (flax.struct's `replace`) are documented by the framework
        if inspect.isfunction(inspect.unwrap(func)) and func.__module__ == cls.__module__:
            problems += _check_function(f"{qualname}.{name}", func, skip_first)
    return problems


def public_symbols(module) -> list[tuple[str, object]]:
    """The module's own public functions (also when wrapped: ``jax.jit``, ``jax.custom_vjp``,
    ``functools.lru_cache``) and classes, not what it imports."""
    return [(name, obj) for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
            and (inspect.isclass(obj) or (callable(obj) and inspect.isfunction(inspect.unwrap(obj))))]


def problems_of(module) -> list[str]:
    problems = []
    for name, obj in public_symbols(module):
        qualname = f"{module.__name__}.{name}"
        problems += _check_class(qualname, obj) if inspect.isclass(obj) else _check_function(qualname, obj)
    return problems


@pytest.mark.parametrize("name", _module_names())
def test_public_api_is_documented(name):
    module = _import(name)
    if name != PKG:
        assert module.__doc__, f"{name}: no module docstring"
    problems = problems_of(module)
    assert not problems, "\n".join(problems)


def test_sections_are_parsed():
    doc = """Summary.

    Args:
      x: the input ``[B, ...]``.
      *args: passed on.
      key (int): a key
        over two lines.

    Returns:
      The output.
    """
    assert sections(doc) == {"Args": ["x", "args", "key"], "Returns": ["The output."]}


def test_gaps_are_found():
    import types

    module = types.ModuleType("example")

    def documented(x: int, y: int = 0) -> int:
        """Sum.

        Args:
          x: one.

        Raises:
          ValueError: never.
        """
        return x + y

    @dataclasses.dataclass
    class Record:
        """A record without its fields."""

        size: int

        def grow(self, by: int):
            """Bigger."""
            return Record(self.size + by)

    for obj in (documented, Record):
        obj.__module__ = module.__name__
        setattr(module, obj.__name__, obj)
    Record.grow.__module__ = module.__name__
    assert sorted(problems_of(module)) == [
        "example.Record.grow: Args lacks by", "example.Record.grow: no Returns section",
        "example.Record: Attributes/Args lack size", "example.documented: Args lacks y",
        "example.documented: no Returns section",
    ]
