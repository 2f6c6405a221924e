"""Language modelling on real text: the ``lm_text`` task (next-token prediction over text files).

Corpus. ``files``: a folder (every regular, non-hidden file under it whose suffix is in ``suffixes``), a
glob (``"docs/**/*.md"``), or a list of either. Default: the Python standard library's source of the
running interpreter, the ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` without ``test/``,
``tests/``, ``idlelib/``, ``site-packages/`` and ``__pycache__/`` (real human-written code and docstrings
that every machine has offline). Because it differs between Python versions, the task records the
Python version, the file count and the sha256 of the sorted list of relative paths (``extra["record"]``,
which ``torchssm train`` writes into the run's ``result.json`` under "data").
Files must be UTF-8: a bad byte sequence is a ``ValueError`` naming the file, the line and the bytes.

Split by file (``split_files``): each file's place is the sha256 of ``(seed, relative path)``; files in
that order go to test (the first ``test_fraction``), validation (the next ``val_fraction``) and train
(the rest, at least one file each). Deterministic, independent of the listing order and of the machine.

Tokens. ``tokenizer: bytes`` (UTF-8 bytes, vocab 256) or ``tokenizer: bpe`` with ``tokenizer_path`` (a
``tokenizer.json``; ``torchssm tokenizer train``). Each split's documents are tokenised once into one flat
array (uint16 for a vocabulary <= 65536, else uint32) plus the document start offsets, cached under
``<data_dir>/lm_text/<key>/`` and read back memory-mapped (``np.load(mmap_mode="r")``). The key hashes the
file list (paths, sizes, mtimes), the split and the tokenizer; every array is written atomically and the
``manifest.json`` naming them is written last, so a killed build is rebuilt, never half-read.

Packed rows (:class:`PackedTokens`): row r covers tokens ``[r L, r L + L]`` of the split's stream
(L = ``context``), documents laid end to end. Item r is ``{"inputs": (L,) long, "targets": (L,) long,
"reset": (L,) bool}`` with targets the inputs shifted by one and ``reset[t]`` true where a document starts
at step t, so a layer with a resettable state (``reset=`` in its forward: LRU, Mamba, Mamba-2) sees each
document from a zero state (:mod:`torchssm.data.batching`). ``train_rows`` / ``eval_rows`` keep a seeded
subset of the rows (a budget); the evaluation can use a longer ``eval_context`` (length extrapolation).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from torchssm.checks import unit_interval
from torchssm.data.loaders import resolve_data_dir
from torchssm.data.registry import TaskData, TaskInfo, register_task
from torchssm.fileio import PathLike, atomic_write, atomic_write_text

SPLITS = ("train", "val", "test")
EXCLUDED_DIRS = ("test", "tests", "idlelib", "site-packages", "__pycache__")  # default corpus (issue 14)
CACHE_FORMAT = 1


# --- the corpus ---------------------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def default_corpus_files() -> list[Path]:
    """The running interpreter's standard-library ``.py`` files, sorted (see the module docstring)."""
    root = stdlib_root()
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        out.extend(Path(folder) / n for n in names if n.endswith(".py"))
    if not out:
        raise FileNotFoundError(f"no .py files under the standard library {root}; give task.files")
    return sorted(out)


def find_files(
    files: PathLike | Sequence[PathLike] | None = None, suffixes: Sequence[str] = (".txt", ".md", ".py", ".rst")
) -> tuple[list[Path], Path]:
    """(sorted files, root they are named relative to) for a folder, a glob, a file, or a list of them."""
    if files is None:
        return default_corpus_files(), stdlib_root()
    specs = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    found: set = set()
    for spec in specs:
        text = os.path.expanduser(str(spec))
        p = Path(text)
        if p.is_dir():
            for folder, dirs, names in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(
                    Path(folder) / n
                    for n in names
                    if not n.startswith(".") and (not suffixes or Path(n).suffix in suffixes)
                )
        elif p.is_file():
            found.add(p)
        elif any(ch in text for ch in "*?["):
            matches = [Path(m) for m in globlib.glob(text, recursive=True) if Path(m).is_file()]
            if not matches:
                raise FileNotFoundError(f"the glob {text!r} matches no file")
            found.update(matches)
        else:
            raise FileNotFoundError(f"text corpus {text!r} is not a file, a folder or a glob")
    if not found:
        raise FileNotFoundError(f"no text files with suffix {list(suffixes)} in {[str(s) for s in specs]}")
    out = sorted(Path(os.path.abspath(f)) for f in found)
    root = Path(os.path.commonpath([str(f.parent) for f in out]))
    return out, root


def read_text(path: PathLike) -> str:
    """The file's text, strictly UTF-8; a bad byte sequence raises ``ValueError`` naming file, line, bytes."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.end]
        raise ValueError(
            f"{path}: line {line}, column {column}: invalid UTF-8 byte sequence {bad!r} "
            f"({err.reason}); text files must be UTF-8"
        ) from None


def corpus_record(files: Sequence[Path], root: Path, default: bool) -> dict:
    """What a run records about its corpus: Python version, file count, sha256 of the sorted relative paths."""
    names = sorted(str(f.relative_to(root)) for f in files)
    record = {
        "file_count": len(names),
        "files_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "bytes": int(sum(f.stat().st_size for f in files)),
        "root": str(root),
    }
    if default:
        record.update(source="python-stdlib", python_version=sys.version.split()[0])
    return record


def split_files(
    files: Sequence[Path], root: Path, val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list[Path]]:
    """Deterministic split by file (see the module docstring); every split keeps its files in sorted order."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        unit_interval(name, frac, "a fraction", include_one=False)
    n = len(files)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise ValueError(
            f"{n} file(s) cannot be split into train/val/test with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}: every split needs at least one file"
        )

    def place(f: Path) -> str:
        return hashlib.sha256(f"{seed}:{f.relative_to(root).as_posix()}".encode()).hexdigest()

    order = sorted(files, key=place)
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


# --- tokenised, cached splits -------------------------------------------------------------------------
def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def tokenize_files(files: Sequence[Path], tokenizer) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens (t,), document starts (d,) int64, UTF-8 bytes) of the files, documents end to end."""
    from tqdm.auto import tqdm

    dtype = _token_dtype(tokenizer.vocab_size)
    pieces, starts, offset, n_bytes = [], [], 0, 0
    for f in tqdm(files, desc="tokenizing", leave=False, disable=len(files) < 50):
        text = read_text(f)
        if not text:
            continue
        n_bytes += len(text.encode("utf-8"))
        ids = (
            np.frombuffer(text.encode("utf-8"), np.uint8)
            if tokenizer.kind == "bytes"
            else np.asarray(tokenizer.encode(text))
        )
        starts.append(offset)
        pieces.append(ids.astype(dtype))
        offset += len(ids)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
    return tokens, np.asarray(starts, dtype=np.int64), n_bytes


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def _cache_key(splits: dict[str, list[Path]], tokenizer_id: str) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}:{tokenizer_id}".encode())
    for split in SPLITS:
        for f in splits[split]:
            st = f.stat()
            h.update(f"{split}:{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def tokenizer_id(tokenizer) -> str:
    if tokenizer.kind == "bytes":
        return "bytes"
    return "bpe:" + hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest()


def load_or_build_splits(splits: dict[str, list[Path]], tokenizer, cache_dir: Path) -> dict[str, dict]:
    """{split: {"tokens": memmap (t,), "starts": (d,), "bytes": int}} from the cache, built if missing."""
    folder = cache_dir / _cache_key(splits, tokenizer_id(tokenizer))
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        manifest = {"format": CACHE_FORMAT, "tokenizer": tokenizer_id(tokenizer), "splits": {}}
        for split in SPLITS:
            tokens, starts, n_bytes = tokenize_files(splits[split], tokenizer)
            _save_npy(folder / f"{split}.tokens.npy", tokens)
            _save_npy(folder / f"{split}.starts.npy", starts)
            manifest["splits"][split] = {
                "tokens": int(tokens.shape[0]),
                "documents": int(starts.shape[0]),
                "bytes": n_bytes,
            }
        text = json.dumps(manifest, indent=1)
        atomic_write_text(manifest_file, text)  # last: marks the cache complete
    manifest = json.loads(manifest_file.read_text())
    out = {}
    for split in SPLITS:
        out[split] = {
            "tokens": np.load(folder / f"{split}.tokens.npy", mmap_mode="r"),
            "starts": np.load(folder / f"{split}.starts.npy"),
            "bytes": manifest["splits"][split]["bytes"],
        }
    return out


# --- packed rows --------------------------------------------------------------------------------------
class PackedTokens(Dataset):
    """Rows of ``context`` tokens from a token stream, with next-token targets and document resets.

    ``rows``: which rows (indices into the ``(len(tokens) - 1) // context`` full rows) to serve; None = all.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        starts: np.ndarray,
        context: int,
        rows: np.ndarray | None = None,
        n_bytes: int = 0,
        resets: bool = True,
        mask_vocab: int = 0,
        mask_seed: int = 0,
    ):
        if not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be a positive int; got {context!r}")
        self.tokens, self.starts, self.context = tokens, np.asarray(starts, dtype=np.int64), context
        self.resets = resets  # False: no "reset" in the items (the documents run on, as one stream)
        self.mask_vocab, self.mask_seed = mask_vocab, mask_seed  # > 0: BERT-masked rows (masked_lm.mask_tokens)
        total = max(0, (len(tokens) - 1) // context)
        self.rows = np.arange(total) if rows is None else np.asarray(rows, dtype=np.int64)
        # bytes per token of the whole split: turns a loss in nats/token into bits per byte
        self.bytes_per_token = n_bytes / len(tokens) if len(tokens) else 1.0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        begin = int(self.rows[index]) * self.context
        chunk = torch.from_numpy(np.asarray(self.tokens[begin : begin + self.context + 1], dtype=np.int64))
        if self.mask_vocab:  # masked LM: the row itself, masked once, seeded by (seed, row)
            from torchssm.models.masked_lm import mask_tokens

            gen = torch.Generator().manual_seed(self.mask_seed * 1_000_003 + int(self.rows[index]))
            inputs, targets = mask_tokens(chunk[:-1], self.mask_vocab, gen)
            return {"inputs": inputs, "targets": targets}
        if not self.resets:
            return {"inputs": chunk[:-1], "targets": chunk[1:]}
        reset = torch.zeros(self.context, dtype=torch.bool)  # (L,)
        lo, hi = np.searchsorted(self.starts, [begin, begin + self.context])
        reset[torch.from_numpy(self.starts[lo:hi] - begin)] = True
        return {"inputs": chunk[:-1], "targets": chunk[1:], "reset": reset}


def _subset(total: int, limit: int, seed: int) -> np.ndarray | None:
    """A seeded, sorted subset of ``limit`` of ``range(total)`` rows (None: all rows)."""
    if limit <= 0 or limit >= total:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=limit, replace=False))


@register_task("lm_text", "next-token language modelling on text files (default: the Python stdlib source)")
def build(
    data_dir=None,
    seed: int = 0,
    files=None,
    suffixes: Sequence[str] = (".txt", ".md", ".py", ".rst"),
    tokenizer: str = "bytes",
    tokenizer_path: str | None = None,
    context: int = 512,
    eval_context: int = 0,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    train_rows: int = 0,
    eval_rows: int = 0,
    document_resets: bool = True,
    objective: str = "causal",
) -> TaskData:
    """Build the ``lm_text`` task (see the module docstring).

    ``eval_context`` (default: ``context``) is the row length of val/test; ``train_rows`` / ``eval_rows``
    (0 = all) keep a seeded subset of the rows, so a run fits a budget. ``document_resets=False`` leaves
    "reset" out of the batches, for layers without a resettable state (S5, attention): documents then run
    on as one stream, as in GPT-style training. ``objective: masked`` turns the rows into BERT's masked
    language modelling (:mod:`torchssm.models.masked_lm`; bidirectional layers such as Hydra; no resets).
    """
    from torchssm.models.tokenizer import build_tokenizer

    if objective not in ("causal", "masked"):
        raise ValueError(f"objective must be 'causal' (next token) or 'masked' (BERT); got {objective!r}")
    tok = build_tokenizer(tokenizer, tokenizer_path)
    listed, root = find_files(files, tuple(suffixes))
    split = split_files(listed, root, val_fraction, test_fraction, seed)
    arrays = load_or_build_splits(split, tok, resolve_data_dir(data_dir) / "lm_text")
    eval_context = eval_context or context
    datasets = {}
    for i, name in enumerate(SPLITS):
        a = arrays[name]
        length = context if name == "train" else eval_context
        total = max(0, (len(a["tokens"]) - 1) // length)
        if total == 0:
            raise ValueError(
                f"the {name} split ({len(a['tokens'])} tokens in {len(split[name])} file(s)) is shorter "
                f"than one row of {length + 1} tokens; use more files or a shorter context"
            )
        rows = _subset(total, train_rows if name == "train" else eval_rows, seed * 7919 + i)
        masked = objective == "masked"
        datasets[name] = PackedTokens(
            a["tokens"],
            a["starts"],
            length,
            rows,
            a["bytes"],
            resets=document_resets and not masked,
            mask_vocab=tok.vocab_size if masked else 0,
            mask_seed=seed * 31 + i,
        )
    vocab = tok.vocab_size
    info = TaskInfo(
        name="lm_text",
        d_input=vocab + (objective == "masked"),
        d_output=vocab,
        length=context,
        kind="lm",
        input_kind="tokens",
        citation="corpus: the files given (default: the Python standard library of this interpreter)",
    )
    record = corpus_record(listed, root, default=files is None)
    record.update(
        split_files={k: len(v) for k, v in split.items()},
        split_tokens={k: int(len(arrays[k]["tokens"])) for k in SPLITS},
        bytes_per_token={k: datasets[k].bytes_per_token for k in SPLITS},
        tokenizer=tokenizer,
        vocab_size=vocab,
        objective=objective,
    )
    return TaskData(
        info=info,
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        extra={"tokenizer": tok, "record": record, "objective": objective},
    )
