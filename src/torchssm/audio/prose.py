"""English prose for spoken sentences: the docstrings of the running interpreter's standard library.

Every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` (tests, site-packages and idlelib
excluded) is parsed with :mod:`ast`; its module, class and function docstrings are split into
sentences at ``. ! ?`` followed by white space. A sentence is kept when, after lower-casing, it
consists of 4 to ``max_words`` plain words of letters (with inner apostrophes) separated by spaces,
commas, semicolons or colons (dropped), and ends with a full stop: no digits, code, URLs or symbols,
so eSpeak NG reads it exactly as written. The result is sorted and de-duplicated, so it depends
only on the Python version (3.11, ``max_words=12``: 4693 sentences, a vocabulary of 3646 words).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import sysconfig
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "dist-packages", "__pycache__", "turtledemo"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc]


def clean_sentence(raw: str, min_words: int = 4, max_words: int = 16):
    """The normalised sentence (lower case words joined by single spaces) or None if rejected."""
    text = " ".join(raw.split())
    if not text.endswith(".") or not text[:1].isupper():
        return None
    body = re.sub(r"[,;:]", " ", text[:-1].lower())
    words = body.split()
    if not min_words <= len(words) <= max_words or not all(_WORD.fullmatch(w) for w in words):
        return None
    return " ".join(words)


def stdlib_sentences(max_words: int = 12) -> list[str]:
    """Sorted unique sentences from the standard library's docstrings (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sentences = set()
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS & set(path.relative_to(root).parts[:-1]):
            continue
        for doc in _docstrings(path):
            for raw in _SENTENCE_END.split(doc):
                sentence = clean_sentence(raw, max_words=max_words)
                if sentence:
                    sentences.add(sentence)
    if not sentences:
        raise FileNotFoundError(f"no usable docstring sentences under the standard library at {root}")
    return sorted(sentences)


def cached_stdlib_sentences(max_words: int = 12, data_dir=None) -> list[str]:
    """:func:`stdlib_sentences`, cached as JSON in the data directory (per Python version), written atomically."""
    from torchssm.data.loaders import resolve_data_dir
    from torchssm.fileio import atomic_write

    version = "{}.{}.{}".format(*sys.version_info[:3])
    path = resolve_data_dir(data_dir) / f"stdlib_sentences_py{version}_w{max_words}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass  # absent or unreadable: rebuilt
    sentences = stdlib_sentences(max_words)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(sentences, f)

    atomic_write(path, write)
    return sentences
