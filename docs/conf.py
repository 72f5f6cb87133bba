"""Sphinx configuration of the asgi_lab docs site (`make docs`).

The source folder is the repository root, so the README, the notebooks and the pages under
docs/ link to each other with the same relative links a code host follows. myst-parser reads
the Markdown, myst-nb the notebooks from their stored outputs (never executed here: `make
notebooks` does that), autodoc the docstrings. Everything runs offline.
"""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # autodoc imports this tree's asgi_lab, not an installed copy

project = "asgi_lab"
author = "the asgi_lab authors"
copyright = "asgi_lab authors, MIT licence"

root_doc = "docs/index"
extensions = ["myst_nb", "sphinx.ext.autodoc"]
include_patterns = ["README.md", "docs/**", "notebooks/*.ipynb", "notebooks/exercises/**.ipynb"]
exclude_patterns = ["docs/_build", "**/.ipynb_checkpoints", ".venv", "docs/README.md"]

# Notebooks: shown with the outputs `make notebooks` stored, as a reader without a kernel sees them.
nb_execution_mode = "off"
nb_merge_streams = True
nb_render_markdown_format = "myst"  # a Markdown output's links (notebook 00's course table) become page links
myst_heading_anchors = 3  # the README's `#section` links work on the site as on a code host
myst_enable_extensions = ["colon_fence", "html_image"]

# Docstrings here are Markdown-flavoured prose: `name` is code, not a cross-reference.
default_role = "code"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
suppress_warnings = [
    "myst.xref_missing",  # a notebook's link to a .py file or folder: fine on a code host, no page here
    "mystnb.unknown_mime_type",  # widget views: their static picture is stored beside them
    "misc.highlighting_failure",  # an exercise's feedback shown as an error: Pygments retries it as plain text
]

smartquotes = False  # `--http h11` stays two hyphens, "quotes" stay as typed

html_theme = "furo"
html_title = "asgi_lab"
html_static_path = []
html_extra_path = ["_extra"]  # index.html at the site's root: the way in
html_show_sourcelink = False
html_copy_source = False
pygments_style = "default"


# -- the docstrings' own conventions, read as reStructuredText ----------------------------------
# The package's docstrings are written for a reader of the source: an indented block after a
# paragraph is preformatted (a diagram, a message flow, an example), and a "- " item may
# continue on indented lines. reStructuredText needs a "::" before such a block and blank
# lines around it; this adds them, so autodoc shows the block as the source does.


def _is_item(line: str) -> bool:
    return line.lstrip().startswith(("- ", "* ")) or line[:3].rstrip(".").isdigit() and line[1:3] == ". "


_PLURAL = re.compile(r"(`[^`\s][^`]*`)(s)\b")  # `TraceEvent`s: RST wants a space after the quote


def preformatted_blocks(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = [_PLURAL.sub(r"\1\\ \2", line) for line in lines]
    out: list[str] = []
    in_item = in_block = False
    for line in lines:
        indented = line.startswith((" ", "\t")) and line.strip()
        if not line.strip():
            out.append(line)
            continue
        if indented and not in_block:
            previous = next((l for l in reversed(out) if l.strip()), "")
            if in_item and out and out[-1].strip():
                out.append(line)  # a list item's next line
                continue
            if not previous.rstrip().endswith("::"):
                if out and out[-1].strip():
                    out.append("")
                out.extend(["::", ""])
            elif out and out[-1].strip():
                out.append("")
            in_block = True
            out.append(line)
            continue
        if indented:
            out.append(line)
            continue
        if in_block and out and out[-1].strip():
            out.append("")
        in_block = False
        in_item = _is_item(line)
        if in_item and out and out[-1].strip() and not _is_item(next(l for l in reversed(out) if l.strip())) \
                and not out[-1].startswith(" "):
            out.append("")  # a list needs a blank line before it
        out.append(line)
    lines[:] = out


# The doctree cache (`make docs -d docs/_build/doctrees`) is thrown away when this file changes,
# so a change to the hook above is seen by every page it touches.
with open(__file__, "rb") as _conf:
    asgi_lab_conf_digest = __import__("hashlib").sha256(_conf.read()).hexdigest()


def setup(app):
    app.add_config_value("asgi_lab_conf_digest", "", "env")
    app.connect("autodoc-process-docstring", preformatted_blocks)
