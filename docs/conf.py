"""Sphinx configuration for rislayers."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "rislayers"
author = "rislayers developers"
copyright = "2026, rislayers developers"

import rislayers  # noqa: E402

release = rislayers.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Shape:" is not a Google section napoleon knows; render it like "Args:".
napoleon_custom_sections = [("Shape", "params_style")]

html_theme = "alabaster"
html_static_path: list[str] = []
