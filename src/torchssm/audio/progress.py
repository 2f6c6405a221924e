"""Progress bars of the speech tools' long loops (data synthesis, decoding): tqdm's, on standard error, left off
when it is not a terminal (logs and tests stay clean) or when there are fewer than ``least`` steps."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable, total: int, desc: str, least: int = 1) -> Iterable:
    """``iterable`` (of ``total`` items) with a bar named ``desc`` that disappears when done."""
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=total < least or not sys.stderr.isatty())
