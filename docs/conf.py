"""Sphinx configuration for rislayers.

Build: ``sphinx-build -W -n -b html docs docs/_build/html`` (warnings are errors and every
cross-reference must resolve). The build needs no network: links into the PyTorch, Python,
NumPy and Pillow documentation come from small inventories shipped in ``_inventories/``
(regenerate them with ``python docs/make_torch_inventory.py``).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository: rislayers, reference_models
sys.path.insert(0, os.path.join(HERE, "_ext"))  # risdocs
sys.path.insert(0, HERE)  # make_torch_inventory (shared with the risdocs extension)

import rislayers  # noqa: E402
from make_torch_inventory import INVENTORIES  # noqa: E402

project = "rislayers"
author = "rislayers developers"
copyright = "2026, rislayers developers"
release = rislayers.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
    "risdocs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples", "results"]
nitpicky = True

# -- autodoc / napoleon --------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
# An undocumented override (a module's forward) must not show torch's docstring as ours.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Shape:" is not a Google section napoleon knows; render it like "Args:" (one entry per
# tensor, its pattern as the description). The docstrings write it as a bullet list, which
# risdocs turns into napoleon's "name: description" entries first.
napoleon_custom_sections = [("Shape", "params_style")]

# -- intersphinx, offline --------------------------------------------------------------------
# Each entry is (the real documentation URL the links point to, a local inventory file):
# Sphinx reads the local file instead of downloading <url>/objects.inv.
intersphinx_mapping = {key: (inv.url, os.path.join("_inventories", f"{key}.inv")) for key, inv in INVENTORIES.items()}
intersphinx_timeout = 1

# -- MyST ----------------------------------------------------------------------------------
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------------
html_theme = "alabaster"
html_static_path = ["_static"]
# Long command lines wrap and wide output scrolls, instead of being cut at the text column.
html_css_files = ["code.css"]
html_theme_options = {"description": "Plug-in layers for referring image segmentation", "fixed_sidebar": True}
