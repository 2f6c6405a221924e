"""English prose for spoken sentences: the docstrings of the running interpreter's standard library.

Every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` (tests, site-packages and idlelib
excluded) is parsed with :mod:`ast`; its module, class and function docstrings are split into
sentences at ``. ! ?`` followed by white space. A sentence is kept when, after lower-casing, it
consists of 4 to ``max_words`` plain words of letters (with inner apostrophes) separated by spaces,
commas, semicolons or colons (dropped), and ends with a full stop: no digits, code, URLs or symbols,
so eSpeak NG reads it exactly as written. The result is sorted and de-duplicated, so it depends
only on the Python version (3.11, ``max_words=12``: 4693 sentences, a vocabulary of 3646 words).

A recogniser's language model can read more of the same kind of text (:func:`language_model_text`): the standard
library's other docstring sentences and, by name, the docstrings of installed packages (:func:`package_docstrings`),
always without the task's val and test docstrings and held-out words.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import re
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
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


def _package_dirs(name: str) -> list[Path]:
    """The directories (or the single file) of the installed top-level package ``name``, found without importing it;
    ValueError naming the package when it is not installed."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a package must be a top-level import name such as 'numpy', got {name!r}")
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ValueError(f"package {name!r} is not installed (an import name, e.g. 'numpy' or 'torch')")
    if spec.submodule_search_locations:
        return [Path(d) for d in spec.submodule_search_locations]
    if spec.origin and spec.origin.endswith(".py"):
        return [Path(spec.origin)]
    raise ValueError(f"package {name!r} has no Python source to read docstrings from (origin {spec.origin!r})")


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


def stdlib_docstrings() -> Iterator[str]:
    """Every module, class and function docstring of the standard library's ``.py`` files (the module docstring's
    exclusions), file by file in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if not _SKIP_DIRS & set(path.relative_to(root).parts[:-1]):
            yield from _docstrings(path)


def package_docstrings(packages: Sequence[str]) -> Iterator[str]:
    """Every module, class and function docstring of the ``.py`` files of the installed packages ``packages``
    (top-level import names, e.g. ``["torch", "numpy"]``; their test directories excluded), package by package, file
    by file in sorted path order. The text depends on the installed versions."""
    for name in packages:
        for place in _package_dirs(name):
            paths = [place] if place.is_file() else sorted(place.rglob("*.py"))
            for path in paths:
                if place.is_file() or not _SKIP_DIRS & set(path.relative_to(place).parts[:-1]):
                    yield from _docstrings(path)


def docstring_sentences(doc: str, min_words: int = 4, max_words: int = 16) -> list[str]:
    """The sentences of one docstring that :func:`clean_sentence` keeps, normalised, in order."""
    cleaned = (clean_sentence(raw, min_words, max_words) for raw in _SENTENCE_END.split(doc))
    return [sentence for sentence in cleaned if sentence]


def stdlib_sentences(max_words: int = 12) -> list[str]:
    """Sorted unique sentences from the standard library's docstrings (see the module docstring)."""
    sentences = {s for doc in stdlib_docstrings() for s in docstring_sentences(doc, max_words=max_words)}
    if not sentences:
        root = sysconfig.get_paths()["stdlib"]
        raise FileNotFoundError(f"no usable docstring sentences under the standard library at {root}")
    return sorted(sentences)


def language_model_text(
    texts: Mapping[str, Sequence[str]], max_words: int = 60, packages: Sequence[str] = (), stdlib: bool = True
) -> list[str]:
    """More text for a ``spoken_sentences`` task's character language model, from the same source without leaking
    its evaluation: every standard-library docstring sentence of 1 to ``max_words`` plain words, except those of a
    docstring that holds a val or test sentence of ``texts`` (:func:`~torchssm.audio.synthetic.sentence_texts`'
    dict), those holding a held-out word, and the training transcripts (the model counts them already); sorted.
    This is the text of session 18's pre-registered test and of every decoding of record since (RESULTS.md,
    Speech): Python 3.11 and the offline preset's texts give 1826 sentences, 161k characters. ``packages`` adds the
    docstrings of those installed packages (:func:`package_docstrings`) under the same rules; ``stdlib=False`` leaves
    the standard library's out (text of another domain, for :class:`~torchssm.audio.lm.InterpolatedLM`)."""
    if isinstance(packages, str):
        raise ValueError(f"packages must be a list of import names, got the string {packages!r}")
    if not stdlib and not packages:
        raise ValueError("stdlib=False leaves no text: name packages too")
    for name in packages:
        _package_dirs(name)  # fails before the standard library is read
    missing = {"train", "val", "test", "heldout"} - set(texts)
    if missing:
        raise ValueError(
            f"texts must hold the train, val, test and heldout lists of sentence_texts; missing {sorted(missing)}"
        )
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be an int >= 1, got {max_words!r}")
    evaluated = set(texts["val"]) | set(texts["test"])
    held = set(texts["heldout"])
    extra: set[str] = set()
    for doc in itertools.chain(stdlib_docstrings() if stdlib else (), package_docstrings(packages)):
        sentences = docstring_sentences(doc, min_words=1, max_words=sys.maxsize)  # every length: finds val / test
        if not evaluated & set(sentences):
            extra |= {s for s in sentences if len(s.split()) <= max_words and not held & set(s.split())}
    return sorted(extra - set(texts["train"]))


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
