"""Sphinx configuration: numpydoc-style docstrings (napoleon), Markdown pages (MyST), built with -W in CI.

Math is rendered by the MathJax copy in ``_static/mathjax`` (no network needed),
the theme is Furo, and ``_static/tsgu.css`` makes long code lines wrap.

The option reference (``options.md``) includes ``_generated/options.md``, which
``options_reference.py`` writes here, at every build, from the backends' own
declarations.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path.insert(0, str(_here))

import options_reference  # noqa: E402  (needs the path above)

options_reference.write(_here / "_generated" / "options.md")

project = "tsgu"
author = "the tsgu developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath"]
exclude_patterns = ["_build", "_generated"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
nitpicky = False
html_theme = "furo"  # the `docs` extra installs it
html_title = "tsgu: differentiable sparse linear solves for PyTorch"
html_static_path = ["_static"]
html_css_files = ["tsgu.css"]  # code blocks wrap instead of being clipped
# MathJax 3.2.2 (Apache-2.0, from npm's `mathjax` package: es5/tex-chtml.js and its woff-v2 fonts) is bundled in
# _static/mathjax, so formulas render offline; sphinx reads a relative path as one under html_static_path
mathjax_path = "mathjax/tex-chtml.js"
