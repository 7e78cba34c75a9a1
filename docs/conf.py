"""Sphinx configuration of the noisesnn-jax documentation: ``make docs`` builds it into docs/_build/html.

The build is offline and strict (``-W --keep-going -n``): every warning fails it, among them a
link to a page or file that does not exist, a broken cross-reference in a docstring and an error
in the tutorial, which runs at every build.
"""

from __future__ import annotations

import pathlib
import sys

import noisesnn_jax

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "noisesnn-jax"
copyright = "the noisesnn-jax authors; Apache-2.0"  # noqa: A001 (Sphinx's name for it)
release = version = noisesnn_jax.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and executed tutorials
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style docstrings
    "sphinx.ext.viewcode",  # the source of every documented module, offline
    "noisesnn_docs",  # docs/_ext: the config and command-line references, generated from the code
]

# The pages; README.md's sections are included where they belong, not built on their own.
exclude_patterns = ["_build", "jupyter_execute", "_templates", ".ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: links to other pages are checked like references (a missing page is a warning, so an
# error); a link to a file that is not a page (a script, a config, a results file) becomes a
# download of that file. Headings get anchors for links such as results.md#demo-measured.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The tutorial runs at every build; an error in a cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_show_tb = True
nb_merge_streams = True

# API reference: docs/_templates/autosummary/module.rst documents each module's members and lists
# its submodules, recursively from api.md's autosummary of the package.
autosummary_generate = True
autosummary_imported_members = False
# Each module's page documents the classes and functions it defines; what its __all__ re-exports
# from another module is listed there as an alias (docs/_ext: noisesnn-module-data).
autosummary_ignore_module_all = True
# ``python -m noisesnn_jax`` runs the command when imported: autosummary's walk over the package
# must not import it (it is the command line, documented in cli.md).
autosummary_mock_imports = ["noisesnn_jax.__main__"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# A class's "Attributes:" section is a field list of its description: autodoc documents the fields
# themselves (with their types and defaults), and a second description of each would be a duplicate.
napoleon_use_ivar = True
napoleon_attr_annotations = False  # the fields' types come from autodoc, evaluated

# Nitpicky: every cross-reference must resolve. Without network access there are no intersphinx
# inventories, so names from other packages (JAX, Flax, NumPy, ...) cannot resolve: those, and
# only those, are ignored. A broken reference to this package's own objects still fails.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|flax|nn|np|numpy|optax|orbax|ml_collections|nir|tfds|tensorflow_datasets"
               r"|array_record|PIL|h5py|chex|tensorboardX|ocp|argparse|concurrent|collections|typing|types|pathlib"
               r"|dataclasses|os)(\..*)?"),
    # The same packages' names as the source or their own annotations write them, where they are
    # imported locally (inside a function or under TYPE_CHECKING): PIL's Image.Image, nir's
    # NIRGraph, jax.sharding's Mesh, tensorboardX's SummaryWriter, chex's ArrayTree (in optax's types).
    (r"py:class", r"Image\.Image|NIRGraph|Mesh|SummaryWriter|ArrayTree"),
]

# Literal blocks without a language (the formulas of method.md, the package tree of design.md, the
# tables in docstrings) are shown as written, not highlighted as Python.
highlight_language = "none"

html_theme = "furo"
html_title = f"noisesnn-jax {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
