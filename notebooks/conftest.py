"""No red boxes: a notebook cell that writes to stderr, or shows an error, fails under nbval.

JupyterLab paints stderr and tracebacks red. A student reads red as "something broke", so a
red box under behaviour the notebook teaches as correct teaches the wrong thing (issue 15).
nbval already fails a cell that raises, unless it is marked `# NBVAL_RAISES_EXCEPTION`; this
hook adds the same rule for stderr (a logged warning, a Python warning, a stray print to
`sys.stderr`). A cell meant to fail says so in the prose before it and carries that marker.

`red_boxes()` is the rule itself; `tests/test_notebook_outputs.py` applies it to the outputs
stored in every committed notebook as well.
"""

from __future__ import annotations

import pytest

try:
    from nbval.plugin import IPyNbCell, find_comment_markers, find_metadata_tags
except ImportError:  # nbval not installed: nothing here to guard
    IPyNbCell = None


def meant_to_fail(cell) -> bool:
    """nbval's own marker for a cell that should raise: the `# NBVAL_RAISES_EXCEPTION`
    comment, or the `raises-exception` / `nbval-raises-exception` tag."""
    options = dict(find_metadata_tags(cell.get("metadata", {})))
    options.update(find_comment_markers(cell["source"] if isinstance(cell["source"], str)
                                        else "".join(cell["source"])))
    return bool(options.get("check_exception"))


def red_boxes(outputs) -> list[str]:
    """Each output that JupyterLab would paint red, in a few words: stderr text, an error."""
    found = []
    for output in outputs:
        if output.get("output_type") == "error":
            found.append(f"error: {output.get('ename')}: {output.get('evalue')}")
        elif output.get("output_type") == "stream" and output.get("name") == "stderr":
            text = output.get("text")
            text = text if isinstance(text, str) else "".join(text)
            found.append(f"stderr: {text.strip()[:500]}")
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # nbval runs the cell (and fails it if it raised unexpectedly)
    if IPyNbCell is not None and isinstance(item, IPyNbCell) and not meant_to_fail(item.cell):
        found = red_boxes(item.test_outputs or [])
        if found:
            pytest.fail(f"cell {item.cell_num} shows a red box in JupyterLab (stderr or an error) "
                        "for a cell not marked # NBVAL_RAISES_EXCEPTION:\n" + "\n".join(found)
                        + f"\n\nInput:\n{item.cell.source}", pytrace=False)
    return result
