"""The committed notebooks show nothing of the machine that built them.

A warning printed by a cell carries the absolute path and line of the code that raised it
(``/home/someone/minilora/minilora/lora/model.py:159: UserWarning: ...``) and the source line: a learner's
notebook then shows another machine's folders, and the stored output changes with every checkout path.
Notebook 4 showed PEFT's tied-embedding warning so; it now prints the warning's message alone.
"""
import re
from pathlib import Path

import pytest

from test_notebooks import _notebook_text  # every cell's source and output text

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# "<absolute path>.py:<line>: <Category>Warning" -- how the warnings module prints a warning
_WARNING_LOCATION = re.compile(r"(?:^|\s)(/[^\s:]+\.py):\d+: \w*Warning\b", re.M)


def test_warning_location_reader_sees_a_printed_warning():
    """The check below can fail: a warning as the warnings module prints it is found, with its path."""
    printed = "emb ok\n/home/me/minilora/minilora/lora/model.py:159: UserWarning: Model has ...\n  warnings.warn(...)"
    assert _WARNING_LOCATION.findall(printed) == ["/home/me/minilora/minilora/lora/model.py"]
    assert _WARNING_LOCATION.findall("A warning says: UserWarning: Model has ...") == []


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_committed_outputs_show_no_warning_location(path):
    nbformat = pytest.importorskip("nbformat")
    shown = _WARNING_LOCATION.findall(_notebook_text(nbformat.read(str(path), as_version=4)))
    assert not shown, (f"{path.name}: a stored output shows a warning with the building machine's path "
                       f"{shown}: print the warning's message instead (warnings.catch_warnings(record=True))")
