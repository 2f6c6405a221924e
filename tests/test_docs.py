"""Every ```python code block in README.md and docs/*.md runs (blocks fenced as ```python no-run are skipped).

The blocks of one file run in order in one namespace (a page may build on its earlier examples), in a
temporary working directory (files they write do not land in the repository; presets are found by
name, inside the package), with matplotlib's Agg backend. A block that needs something the test cannot
provide (a trained run, a GPU, a download) is fenced ```python no-run.
"""

import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str):
    """[(line number, code)] of the runnable ```python blocks of a Markdown text."""
    out = []
    for m in FENCE.finditer(text):
        if "no-run" in m.group(1).split():
            continue
        out.append((text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def test_python_blocks_parser():
    text = "a\n```python\nx = 1\n```\n```python no-run\nboom()\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (11, "y = x\n")]


@pytest.mark.parametrize("page", [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_doc_examples_run(page, tmp_path, monkeypatch, request):
    blocks = python_blocks(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no runnable python block")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One torch thread while the examples run: the examples are tiny, and torch's intra-op threads fighting the
    # numba kernels' threads on a loaded machine made small models up to 100x slower (restored afterwards).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"the python block at {page.name} line {line} failed: {err!r}") from err
