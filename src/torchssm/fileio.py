"""Atomic file writes: nothing ever sees a half-written file.

``atomic_write(path, write)`` lets ``write(tmp_path)`` fill a temporary file in the same directory,
flushes it to disk (fsync), then renames it over ``path`` (``os.replace``: atomic on POSIX and
Windows). A failed write leaves the old file as it was and no temporary file behind.
``atomic_write_text`` and ``atomic_write_json`` are that for a string and for a JSON document.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# What a path argument accepts across torchssm (a str or any os.PathLike, e.g. pathlib.Path).
PathLike = str | os.PathLike


def atomic_write(path: PathLike, write: Callable[[str], object], *, mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)``, fsync the result, set its permission bits to ``mode`` (mkstemp makes
    0600 files), then rename it over ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``atomic_write``). Returns ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def atomic_write_json(path: PathLike, obj: object, *, indent: int | None = None) -> Path:
    """Write ``json.dumps(obj, indent=indent)`` to ``path`` atomically. Returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))
