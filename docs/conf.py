"""Sphinx configuration: numpydoc-style docstrings (napoleon), Markdown pages (MyST), built with -W in CI."""

project = "tsgu"
author = "the tsgu developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath"]
exclude_patterns = ["_build"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
nitpicky = False
html_theme = "alabaster"
html_title = "tsgu: differentiable sparse linear solves for PyTorch"
suppress_warnings = ["myst.xref_missing"]
