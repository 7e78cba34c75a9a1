"""The docs' local Sphinx extension: the command line's reference rendered from the code (so it
cannot drift), helpers of the API reference, and links to the files that pages include.

``noisesnn-config-reference``
    Every field of the default config (``noisesnn_jax.run.config.get_config``) with its default,
    its type, the comments written beside it in ``get_config`` and the rule ``validate`` enforces
    on it. The rules are read from the source of the config module's checks (every function that
    calls ``_require``: ``validate`` or the steps it runs): each ``_require(cond, field, value,
    allowed)`` call gives a field and the text of its error message; ``for`` loops over literal
    tuples are expanded; message parts that depend only on module constants (the choices) are
    evaluated, parts that depend on other config values are shown as expressions. The build fails
    if a check names a field the default config does not have, if it has a statement this reader
    does not understand, or if the defaults do not validate.

``noisesnn-cli-help``
    ``noisesnn --help`` and the help of every subcommand, from ``run.cli.build_parser()``.

For the API reference (docs/_templates/autosummary/module.rst):

``noisesnn-module-data``
    An entry for each constant a module assigns at its top level (``spikes.NOISE_KINDS``), which
    autosummary lists only when it carries a doc comment, and for each class or function its
    ``__all__`` re-exports from another module (``noisesnn_jax.Noise``), so that docstrings can
    refer to both.

``autodoc-process-bases``, ``autodoc-skip-member``
    A private base class (``models._SNNBase``) is shown as its own bases; its fields are shown on
    the public classes (the template's ``:inherited-members: Module``). The fields Flax adds to
    every module (``name``, ``parent``, ``scope``) are left out.

And for links (a post-transform that runs before MyST resolves its links): a Markdown link to a
``.md`` file outside docs/ (``../experiments/results/demo.md``, which GitHub shows as a file)
becomes a link to the place where a page of the site includes that file; a link to such a file
that no page includes is a warning, so an error under ``-W``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import os
import textwrap
import tokenize
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.errors import ExtensionError
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The config: fields, defaults, comments
# ---------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    if isinstance(value, tuple):
        inner = sorted({type(v).__name__ for v in value}) or ["int"]
        return f"tuple[{' | '.join(inner)}, ...]"
    return type(value).__name__


def _comments(source: str) -> dict[int, str]:
    """Line number (1-based, within ``source``) -> the text of the comment on that line."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def _group_comments(config_module) -> dict[str, list[str]]:
    """``group -> paragraphs`` from ``get_config``'s comments: those above ``c.group = ...`` (back to
    the previous ``c.*`` assignment) and those inside it; consecutive comment lines are one paragraph."""
    source = textwrap.dedent(inspect.getsource(config_module.get_config))
    comments = _comments(source)
    func = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
    out: dict[str, list[str]] = {}
    start = func.lineno + 1
    for stmt in func.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            start = stmt.end_lineno + 1  # the docstring
            continue
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "c":
            paragraphs: list[str] = []
            previous = None
            for n in range(start, stmt.end_lineno + 1):
                if n in comments:
                    if previous == n - 1:
                        paragraphs[-1] += " " + comments[n]
                    else:
                        paragraphs.append(comments[n])
                    previous = n
            out[target.attr] = paragraphs
            start = stmt.end_lineno + 1
    return out


# ---------------------------------------------------------------------------------------------
# The validation: rules read from the source of config.py's checks
# ---------------------------------------------------------------------------------------------

class _Rules:
    """Collects ``field -> [message parts]`` and the cross-field rules from every function of the
    config module that calls ``_require`` (``validate`` itself, or the checks it runs), in source
    order."""

    def __init__(self, config_module, defaults) -> None:
        self.module = config_module
        self.defaults = defaults
        self.rules: dict[str, list[list[tuple[str, str]]]] = {}
        self.cross: list[str] = []
        tree = ast.parse(inspect.getsource(config_module))
        checks = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name != "_require"
                  and any(isinstance(n, ast.Call) and _called(n) == "_require" for n in ast.walk(f))]
        if not checks:
            raise ExtensionError("noisesnn-config-reference: no function of the config module calls _require")
        for func in checks:
            self.function = func.name
            self.aliases: dict[str, str] = {}  # local name -> what it stands for ("d" -> "config.dataset")
            self.config_arg = func.args.args[0].arg  # "c"
            self._walk(func.body, {})

    # A message is a list of (kind, text) parts, kind "text" or "code".
    def _message(self, node: ast.AST, env: dict[str, Any]) -> list[tuple[str, str]]:
        if isinstance(node, ast.Constant):
            return [("text", str(node.value))]
        if isinstance(node, ast.JoinedStr):
            parts: list[tuple[str, str]] = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(("text", str(value.value)))
                else:
                    parts.append(self._formatted(value, env))
            return parts
        raise ExtensionError(f"noisesnn-config-reference: cannot read the message {ast.unparse(node)!r} "
                             f"in config.{self.function} (use a string or an f-string)")

    def _formatted(self, value: ast.FormattedValue, env: dict[str, Any]) -> tuple[str, str]:
        names = {n.id for n in ast.walk(value.value) if isinstance(n, ast.Name)}
        if names & (set(self.aliases) | {self.config_arg}):
            # Depends on the config itself: show the expression, in terms of config.group.field.
            return ("code", self._expression(value.value, env))
        scope = {**vars(self.module), **env}
        result = eval(compile(ast.Expression(value.value), "<validate>", "eval"), scope)  # noqa: S307
        if value.conversion == ord("r"):
            result = repr(result)
        return ("text", format(result, ast.unparse(value.format_spec)[2:-1] if value.format_spec else ""))

    def _expression(self, node: ast.expr, env: dict[str, Any]) -> str:
        """``node`` as source, local names replaced by what they stand for (``m.channels`` ->
        ``config.model.channels``, a loop variable by its value)."""
        mapping = {name: ast.parse(expr, mode="eval").body for name, expr in self.aliases.items()}
        mapping[self.config_arg] = ast.Name("config")
        mapping.update({name: ast.Constant(value) for name, value in env.items()})

        class Substitute(ast.NodeTransformer):
            def visit_Name(self, name: ast.Name) -> ast.expr:
                return mapping.get(name.id, name)

        return ast.unparse(Substitute().visit(ast.parse(ast.unparse(node), mode="eval")))

    def _field(self, node: ast.AST, env: dict[str, Any]) -> str:
        parts = self._message(node, env)
        if any(kind == "code" for kind, _ in parts):
            raise ExtensionError(f"noisesnn-config-reference: the field name {ast.unparse(node)!r} of a "
                                 f"_require call in config.{self.function} depends on the config")
        return "".join(text for _, text in parts)

    def _walk(self, body: list[ast.stmt], env: dict[str, Any]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                self.aliases[stmt.targets[0].id] = self._expression(stmt.value, env)  # d = c.dataset, v = m[f]
            elif isinstance(stmt, ast.For) and isinstance(stmt.target, ast.Name):
                try:
                    values = ast.literal_eval(stmt.iter)
                except ValueError:
                    raise ExtensionError(f"noisesnn-config-reference: config.{self.function} loops over "
                                         f"{ast.unparse(stmt.iter)!r}; this directive expands loops over "
                                         f"literal tuples only") from None
                for value in values:
                    self._walk(stmt.body, {**env, stmt.target.id: value})
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _called(stmt.value) == "_require":
                args = stmt.value.args
                field = self._field(args[1], env)
                self.rules.setdefault(field, []).append(self._message(args[3], env))
            elif isinstance(stmt, ast.If):
                self._walk(stmt.body, env)
                self._walk(stmt.orelse, env)
            elif isinstance(stmt, ast.Raise) and isinstance(stmt.exc, ast.Call) and stmt.exc.args:
                self.cross.append("".join(text for _, text in self._message(stmt.exc.args[0], env)))
            elif isinstance(stmt, ast.Return) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                continue  # the return and the docstring
            else:
                raise ExtensionError(f"noisesnn-config-reference: config.{self.function} has a statement "
                                     f"this directive cannot read: {ast.unparse(stmt)!r}")


def _called(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else ""


# ---------------------------------------------------------------------------------------------
# docutils helpers
# ---------------------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[list[nodes.Node]]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["noisesnn-reference"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for title in header:
        row += nodes.entry("", nodes.paragraph(text=title))
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            row += nodes.entry("", nodes.paragraph("", "", *cell))
        body += row
    return table


def _parts(parts: list[tuple[str, str]]) -> list[nodes.Node]:
    return [nodes.literal(text=t) if kind == "code" else nodes.Text(t) for kind, t in parts]


def _section(document, title: str, name: str) -> nodes.section:
    section = nodes.section(ids=[nodes.make_id(name)], names=[nodes.fully_normalize_name(name)])
    section += nodes.title(text=title)
    document.note_implicit_target(section, section)
    return section


class ConfigReference(Directive):
    """``noisesnn-config-reference``: one section per config group, a table of its fields."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from noisesnn_jax.run import config as config_module

        defaults = config_module.get_config()
        config_module.validate(config_module.get_config())  # the defaults are valid
        rules = _Rules(config_module, defaults)
        comments = _group_comments(config_module)
        document = self.state.document

        fields: list[tuple[str, Any]] = []
        for group, value in defaults.items():
            if hasattr(value, "items"):
                fields += [(f"{group}.{k}", v) for k, v in value.items()]
            else:
                fields.append((group, value))
        known = {name for name, _ in fields}
        unknown = sorted(set(rules.rules) - known)
        if unknown:
            raise ExtensionError(f"noisesnn-config-reference: config.validate checks {unknown}, which the "
                                 f"default config (get_config) does not have")

        out: list[nodes.Node] = []
        order = {name: i for i, name in enumerate(comments)}  # get_config's order, not ConfigDict's sorted one
        top = sorted(((name, v) for name, v in fields if "." not in name), key=lambda f: order.get(f[0], len(order)))
        groups = sorted(((g, v) for g, v in defaults.items() if hasattr(v, "items")),
                        key=lambda g: order.get(g[0], len(order)))
        sections = [("top-level fields", "config-top-level", top, sum((comments.get(n, []) for n, _ in top), []))]
        sections += [(f"config.{g}", f"config-{g}", [(n, v) for n, v in fields if n.startswith(g + ".")],
                      comments.get(g, [])) for g, _ in groups]
        for title, name, group_fields, notes in sections:
            section = _section(document, title, name)
            for note in notes:
                section += nodes.paragraph(text=note)
            rows = []
            for field, value in group_fields:
                checks = rules.rules.get(field, [])
                rule: list[nodes.Node] = []
                for i, parts in enumerate(checks):
                    if i:
                        rule.append(nodes.Text("; "))
                    rule += _parts(parts)
                if not rule:
                    rule = [nodes.Text("the default's type (checked on override)")]
                rows.append([[nodes.literal(text=field)], [nodes.literal(text=repr(value))],
                             [nodes.Text(_type_name(value))], rule])
            section += _table(["field", "default", "type", "rule (config.validate)"], rows, [22, 18, 12, 48])
            out.append(section)
        if rules.cross:
            section = _section(document, "rules across fields", "config-cross-field-rules")
            items = nodes.bullet_list()
            for text in rules.cross:
                items += nodes.list_item("", nodes.paragraph(text=text))
            section += items
            out.append(section)
        return out


class CliHelp(Directive):
    """``noisesnn-cli-help``: the help of ``noisesnn`` and of each subcommand, one section each."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from noisesnn_jax.run.cli import build_parser

        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal's width: fix it to the page's
        try:
            parser = build_parser()
            out = [nodes.literal_block(text=parser.format_help(), language="text")]
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        section = _section(self.state.document, f"noisesnn {name}", f"cli-{name}")
                        section += nodes.literal_block(text=sub.format_help(), language="text")
                        out.append(section)
        finally:
            if previous is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = previous
        return out


# ---------------------------------------------------------------------------------------------
# The API reference
# ---------------------------------------------------------------------------------------------

def module_data(modname: str) -> list[tuple[str, str, list[str]]]:
    """``(name, value source, doc comment lines)`` of the constants module ``modname`` assigns at its
    top level, in source order: public UPPER_CASE names, names with a ``#:`` doc comment, and names
    in the module's ``__all__``."""
    import importlib

    from sphinx.pycode import ModuleAnalyzer

    module = importlib.import_module(modname)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return []
    docs = {name: lines for (_, name), lines in ModuleAnalyzer.for_module(modname).find_attr_docs().items()}
    exported = set(getattr(module, "__all__", ()))
    out: list[tuple[str, str, list[str]]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else ""
            if (not name or name.startswith("_") or not hasattr(module, name) or any(n == name for n, _, _ in out)
                    or not (name.isupper() or name in docs or name in exported)):
                continue
            source = " ".join(ast.unparse(value).split())
            out.append((name, source if len(source) <= 100 else source[:96] + " ...", list(docs.get(name, []))))
    return out


def module_reexports(modname: str) -> list[tuple[str, str, str]]:
    """``(directive, name, canonical name)`` for each class or function in module ``modname``'s
    ``__all__`` that another module of the package defines."""
    import importlib

    module = importlib.import_module(modname)
    out = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name, None)
        home = getattr(obj, "__module__", None)
        if inspect.ismodule(obj) or not home or home == modname or not home.startswith("noisesnn_jax"):
            continue
        if inspect.isclass(obj):
            directive = "exception" if issubclass(obj, BaseException) else "class"
        elif callable(obj):
            directive = "function"
        else:
            continue
        out.append((directive, name, f"{home}.{getattr(obj, '__qualname__', name)}"))
    return out


class ModuleData(SphinxDirective):
    """``noisesnn-module-data:: module``: a ``py:data`` entry for each constant :func:`module_data`
    finds (its value as the source writes it), and an alias entry for each re-exported class or
    function (:func:`module_reexports`), so that docstrings and pages can refer to both."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        source = "<noisesnn-module-data>"
        lines = StringList()
        for name, value, doc in module_data(modname):
            lines.append(f".. py:data:: {name}", source)
            lines.append(f"   :value: {value}", source)
            lines.append("", source)
            for line in doc:
                lines.append(f"   {line}", source)
            lines.append("", source)
        container = nodes.container()
        self.state.nested_parse(lines, self.content_offset, container)
        out = list(container.children)
        # A re-export is a target that resolves to this entry, registered as an alias: a short
        # reference (``DataError`` in a docstring) still finds the one defining entry.
        python = self.env.get_domain("py")
        for directive, name, canonical in module_reexports(modname):
            fullname = f"{modname}.{name}"
            target = nodes.target("", "", ids=[fullname])
            self.state.document.note_explicit_target(target)
            python.note_object(fullname, directive, fullname, aliased=True, location=(self.env.docname, self.lineno))
            lines = StringList()
            lines.append(f".. py:{directive}:: {name}", source)
            lines.append("   :no-index:", source)
            lines.append("", source)
            lines.append(f"   Re-exported: :py:obj:`{canonical}`.", source)
            container = nodes.container()
            self.state.nested_parse(lines, self.content_offset, container)
            out += [target, *container.children]
        return out


def _skip_flax_fields(app, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """``autodoc-skip-member``: Flax adds ``name``, ``parent`` and ``scope`` (default ``None``) to
    every ``nn.Module`` subclass; they are Flax's, not the model's."""
    if what == "class" and name in ("name", "parent", "scope") and obj is None:
        return True
    return None


def _public_bases(app, name: str, obj: Any, options: Any, bases: list) -> None:
    """``autodoc-process-bases``: replace a private base class by its own bases."""
    def public(classes):
        out = []
        for cls in classes:
            if getattr(cls, "__name__", "").startswith("_") and hasattr(cls, "__bases__"):
                out += [b for b in public(cls.__bases__) if b not in out]
            elif cls not in out:
                out.append(cls)
        return out

    bases[:] = public(list(bases))


# ---------------------------------------------------------------------------------------------
# Links to Markdown files outside docs/
# ---------------------------------------------------------------------------------------------

def _outside_markdown(srcdir: str, source: str | None) -> str | None:
    """The real path of ``source`` if it is a Markdown file outside the docs folder."""
    if not source or not source.endswith(".md"):
        return None
    path = os.path.realpath(source)
    return None if path.startswith(srcdir + os.sep) else path


def _note_included_files(app, doctree: nodes.document) -> None:
    """``doctree-read``: give the first element that each included outside file produced an id,
    and remember ``file -> (page, id)`` for the links below."""
    env = app.env
    srcdir = os.path.realpath(env.srcdir)
    included = env.__dict__.setdefault("noisesnn_included", {})
    seen = set()
    for node in doctree.findall(nodes.Element):
        path = _outside_markdown(srcdir, node.source)
        if path is None or path in seen:
            continue
        seen.add(path)
        anchor = nodes.make_id("file " + os.path.relpath(path, os.path.dirname(srcdir)))
        node["ids"].append(anchor)
        included.setdefault(path, (env.docname, anchor))


def _purge_included_files(app, env, docname: str) -> None:
    included = env.__dict__.get("noisesnn_included", {})
    for path in [p for p, (doc, _) in included.items() if doc == docname]:
        del included[path]


def _merge_included_files(app, env, docnames, other) -> None:
    env.__dict__.setdefault("noisesnn_included", {}).update(other.__dict__.get("noisesnn_included", {}))


class IncludedFileLinks(SphinxPostTransform):
    """A link to a ``.md`` file outside the docs becomes a link to where a page includes it."""

    default_priority = 5  # before MyST's reference resolver (9)

    def run(self, **kwargs: Any) -> None:
        srcdir = os.path.realpath(self.env.srcdir)
        included = self.env.__dict__.get("noisesnn_included", {})
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
                continue
            target = node["reftarget"]
            if target in self.env.all_docs:
                continue
            path = _outside_markdown(srcdir, os.path.join(srcdir, target + ".md"))
            if path is None or not os.path.isfile(path):
                continue  # a missing page: MyST reports it
            if path not in included:
                LOGGER.warning(f"link to {os.path.relpath(path, srcdir)}, a file outside docs/ that no page "
                               f"includes: include it in a page or write its path as code",
                               location=node, type="noisesnn", subtype="link")
                node.replace_self(node[0].deepcopy())
                continue
            page, anchor = included[path]
            uri = self.app.builder.get_relative_uri(node.get("refdoc", self.env.docname), page) + "#" + anchor
            reference = nodes.reference("", "", internal=True, refuri=uri, classes=["xref", "myst"])
            reference += node[0].deepcopy()
            node.replace_self(reference)


def setup(app) -> dict[str, Any]:
    app.add_directive("noisesnn-config-reference", ConfigReference)
    app.add_directive("noisesnn-cli-help", CliHelp)
    app.add_directive("noisesnn-module-data", ModuleData)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-skip-member", _skip_flax_fields)
    app.connect("doctree-read", _note_included_files)
    app.connect("env-purge-doc", _purge_included_files)
    app.connect("env-merge-info", _merge_included_files)
    app.add_post_transform(IncludedFileLinks)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
