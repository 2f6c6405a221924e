"""Shared pieces of the Long Range Arena readers: locating files, clear errors, byte tokens.

Long Range Arena: Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers"
(ICLR), release ``lra_release.gz`` from https://github.com/google-research/long-range-arena.
The data root is ``data_dir`` / ``$TORCHSSM_DATA`` / ``~/.cache/torchssm``
(:func:`torchssm.data.loaders.resolve_data_dir`); each reader looks for its folder under the
root, under ``root/lra_release`` and under ``root/lra_release/lra_release`` (the archive's own
nesting), so unpacking the archive into the root just works.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from torchssm.data.loaders import resolve_data_dir

LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
LRA_CITATION = "Tay et al. 2021, Long Range Arena: A Benchmark for Efficient Transformers, ICLR"


class DataFormatError(ValueError):
    """A malformed line in a data file; the message names the file and the line."""


def candidate_dirs(data_dir, names: Sequence[str]) -> list[Path]:
    """Where a data set folder called one of ``names`` may live under the data root."""
    root = resolve_data_dir(data_dir)
    bases = [root, root / "lra_release", root / "lra_release" / "lra_release"]
    return [base / name for base in bases for name in names]


GENERATED_MARKER = "torchssm-generated.json"  # written into every folder a torchssm generator fills


def mark_generated(folder, **settings) -> None:
    """Mark ``folder`` as written by a torchssm generator (the file records ``settings``)."""
    import json

    from torchssm.fileio import atomic_write_text

    text = json.dumps({"generator": "torchssm", **settings}, sort_keys=True) + "\n"
    atomic_write_text(Path(folder) / GENERATED_MARKER, text)


def is_generated(folder) -> bool:
    """True for a folder written by a torchssm generator (it holds :data:`GENERATED_MARKER`)."""
    return (Path(folder) / GENERATED_MARKER).exists()


def data_source(folder) -> str:
    """``"generated"`` or ``"release"``: the value of ``TaskInfo.source`` for data read from ``folder``."""
    return "generated" if is_generated(folder) else "release"


def find_dir(data_dir, names: Sequence[str], required: Sequence[str], what: str, how: str) -> Path:
    """The first candidate folder holding every path in ``required``, official releases before
    generated folders (:func:`is_generated`); else a FileNotFoundError saying what to download from
    where and where to put it."""
    cands = candidate_dirs(data_dir, names)
    found = [d for d in cands if all((d / r).exists() for r in required)]
    if found:
        return sorted(found, key=is_generated)[0]  # stable: a release first, then the search order
    root = resolve_data_dir(data_dir)
    raise FileNotFoundError(
        f"{what} not found: looked for {', '.join(required)} in {', '.join(str(c) for c in cands[: len(names)])} "
        f"(and under lra_release/). {how} Put it under the data root {root} (set with --data-dir or "
        f"$TORCHSSM_DATA)."
    )


def lra_download_hint(folder: str) -> str:
    return (
        f"Download the Long Range Arena release {LRA_URL} (about 7 GB), unpack it with "
        f"`tar xzf lra_release.gz`, and keep (or move) its folder {folder!r}."
    )


def read_tsv(path: Path, n_fields: int, header: Sequence[str] | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a tab-separated UTF-8 file with exactly ``n_fields`` fields per line.

    Lines end at ``\\n`` (a trailing ``\\r`` is dropped), no quoting (as the LRA pipelines read
    them, ``use_quote_delim=False``). A wrong header, a wrong field count or bytes that are not
    UTF-8 raise :class:`DataFormatError` naming file and line.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    f"{path}:{lineno}: invalid UTF-8 at byte {err.start} of the line "
                    f"({raw[max(0, err.start - 10) : err.start + 10]!r})"
                ) from None
            line = line.rstrip("\n").rstrip("\r")
            fields = line.split("\t")
            if lineno == 1 and header is not None:
                if fields != list(header):
                    raise DataFormatError(f"{path}:1: expected the header {'<TAB>'.join(header)!r}, got {line[:80]!r}")
                continue
            if line == "":
                continue
            if len(fields) != n_fields:
                raise DataFormatError(
                    f"{path}:{lineno}: expected {n_fields} tab-separated fields, got {len(fields)}: {line[:80]!r}"
                )
            yield lineno, fields


def parse_label(text: str, n_classes: int, path: Path, lineno: int) -> int:
    """An integer class label in [0, n_classes) written as "3" or "3.0"; else DataFormatError."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value == int(value) if value == value else False) or not 0 <= value < n_classes:
        raise DataFormatError(f"{path}:{lineno}: expected a class label in 0..{n_classes - 1}, got {text!r}")
    return int(value)


BYTE_VOCAB = 257  # 0 = padding, byte b -> b + 1


def encode_bytes(text: str, max_length: int) -> torch.Tensor:
    """UTF-8 bytes + 1 (0 is padding), truncated to ``max_length``: (l,) long, l <= max_length."""
    data = text.encode("utf-8")[:max_length]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() + 1 if data else torch.zeros(0, dtype=torch.long)


def pad_rows(rows: Sequence[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length) long padded with 0, and (n,) true lengths (at least 1: an empty row keeps one pad)."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    lengths = torch.empty(len(rows), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
        lengths[i] = max(int(r.numel()), 1)
    return out, lengths


def split_off(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of range(n) cut into (rest, held_out) with round(n * fraction) held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    k = int(round(n * float(fraction)))
    return perm[k:], perm[:k]


def imap_ordered(fn, items: Sequence, workers: int | None = None):
    """``map(fn, items)`` in worker processes (fork where available), results in input order.

    With ``workers`` <= 1 (or one item) it runs in this process. A generator: close it (or run it
    to the end) to release the pool.
    """
    import multiprocessing

    workers = max(1, min(len(items), workers if workers else min(4, multiprocessing.cpu_count())))
    if workers == 1:
        yield from map(fn, items)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(fn, items)


def load_or_build_cache(path: Path, build, rebuild: bool = False) -> dict:
    """{name: np.ndarray} from the .npz ``path``, else ``build()`` written there atomically."""
    import numpy as np

    from torchssm.data.loaders import save_npz_atomic

    if path.exists() and not rebuild:
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):
            pass  # unreadable cache: rebuilt below
    arrays = build()
    save_npz_atomic(path, **arrays)
    return arrays
