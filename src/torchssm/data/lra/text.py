"""LRA Text (IMDB, byte level) and LRA Retrieval (ACL Anthology Network pairs, byte level).

Text (Tay et al. 2021, Sec. 3.2; Maas et al. 2011 IMDB): binary sentiment of a movie review read
as UTF-8 bytes, truncated/padded to 4096 steps. Read from the ``aclImdb/`` folder of
https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz (``{train,test}/{neg,pos}/*.txt``;
label neg = 0, pos = 1; files in sorted order). LRA has no validation split for Text (the test
set is used, as in the state-spaces/s4 loader); ``val_fraction`` > 0 holds out part of train.

Retrieval (Tay et al. 2021, Sec. 3.3; Radev et al. 2013 AAN): do two papers cite each other?
Two byte sequences of up to 4000 steps each; two-tower models fuse the encodings as
[u, v, u*v, u-v]. Read from ``new_aan_pairs.{train,eval,test}.tsv`` (``lra_release/tsv_data/``),
one pair per line: ``label<TAB>id1<TAB>id2<TAB>text1<TAB>text2`` with no header. Batches carry
"inputs", "lengths" (first paper) and "inputs2", "lengths2" (second paper).

Bytes map to ids byte + 1 (0 = padding): ``d_input = 257``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from torchssm.checks import unit_interval
from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.lra.common import (
    BYTE_VOCAB,
    LRA_CITATION,
    DataFormatError,
    encode_bytes,
    find_dir,
    load_or_build_cache,
    lra_download_hint,
    pad_rows,
    parse_label,
    read_tsv,
    split_off,
)
from torchssm.data.registry import TaskData, TaskInfo, register_task

TEXT_LENGTH = 4096  # LRA Text max_length
RETRIEVAL_LENGTH = 4000  # LRA Retrieval max_length per document
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


def _cache_path(data_dir, kind: str, folder: Path, length: int) -> Path:
    key = hashlib.sha256(f"{folder.resolve()}:{length}".encode()).hexdigest()[:10]
    return resolve_data_dir(data_dir) / f"{kind}_{key}.npz"


def read_imdb_split(folder: Path, length: int = TEXT_LENGTH) -> dict:
    """{"inputs": (n, length) int16 ids, "lengths": (n,), "targets": (n,)} from ``folder/{neg,pos}/*.txt``."""
    rows, targets = [], []
    for label, sub in enumerate(("neg", "pos")):
        files = sorted((folder / sub).glob("*.txt"))
        if not files:
            raise DataFormatError(f"{folder / sub}: no review files (*.txt)")
        for f in files:
            rows.append(encode_bytes(f.read_text(encoding="utf-8", errors="replace"), length))
            targets.append(label)
    inputs, lengths = pad_rows(rows, length)
    return {"inputs": inputs.numpy().astype(np.int16), "lengths": lengths.numpy(), "targets": np.array(targets)}


def _to_dataset(arrays: dict) -> TensorDictDataset:
    return TensorDictDataset(**{k: torch.from_numpy(np.asarray(v)).long() for k, v in arrays.items()})


def _hold_out(train: TensorDictDataset, val_fraction: float, seed: int):
    unit_interval("val_fraction", val_fraction, "a fraction", include_one=False)
    if val_fraction == 0:
        return train, None
    rest, held = split_off(len(train), val_fraction, seed)
    return train.subset(rest), train.subset(held)


@register_task("text", "LRA Text: IMDB sentiment from bytes; 2 classes, length 4096 (needs aclImdb/)")
def build_text(
    data_dir=None, seed: int = 0, max_length: int = TEXT_LENGTH, val_fraction: float = 0.0, rebuild_cache: bool = False
) -> TaskData:
    """LRA Text; the parsed reviews are cached as ``lra_text_<hash>.npz`` in the data root."""
    folder = find_dir(
        data_dir,
        ["aclImdb"],
        ["train/pos", "train/neg", "test/pos", "test/neg"],
        "IMDB (aclImdb/)",
        f"Download {IMDB_URL} and unpack it (`tar xzf aclImdb_v1.tar.gz`) to get the folder 'aclImdb'.",
    )
    splits = {}
    for split in ("train", "test"):
        path = _cache_path(data_dir, f"lra_text_{split}", folder, max_length)
        splits[split] = _to_dataset(
            load_or_build_cache(path, lambda: read_imdb_split(folder / split, max_length), rebuild_cache)  # noqa: B023 (closure called in the iteration that defines it)
        )
    train, val = _hold_out(splits["train"], val_fraction, seed)
    info = TaskInfo(
        name="text",
        d_input=BYTE_VOCAB,
        d_output=2,
        length=max_length,
        kind="classification",
        input_kind="tokens",
        citation=LRA_CITATION + "; Maas et al. 2011, IMDB",
    )
    return TaskData(info=info, train=train, val=val, test=splits["test"], extra={"folder": str(folder)})


def read_aan_tsv(path: Path, length: int = RETRIEVAL_LENGTH) -> dict:
    """Arrays inputs/lengths, inputs2/lengths2 (n, length) / (n,), targets (n,) from one AAN TSV file."""
    rows1, rows2, targets = [], [], []
    for lineno, (label, _id1, _id2, text1, text2) in read_tsv(path, 5):
        targets.append(parse_label(label, 2, path, lineno))
        rows1.append(encode_bytes(text1, length))
        rows2.append(encode_bytes(text2, length))
    if not targets:
        raise DataFormatError(f"{path}: no examples")
    x1, l1 = pad_rows(rows1, length)
    x2, l2 = pad_rows(rows2, length)
    return {
        "inputs": x1.numpy().astype(np.int16),
        "lengths": l1.numpy(),
        "inputs2": x2.numpy().astype(np.int16),
        "lengths2": l2.numpy(),
        "targets": np.array(targets),
    }


@register_task("retrieval", "LRA Retrieval: do two AAN papers cite each other; paired bytes, 2 x 4000")
def build_retrieval(
    data_dir=None,
    seed: int = 0,
    max_length: int = RETRIEVAL_LENGTH,
    limit: int | None = None,
    rebuild_cache: bool = False,
) -> TaskData:
    """LRA Retrieval (paired); parsed files cached as ``lra_aan_<split>_<hash>.npz`` in the data root."""
    names = {s: f"new_aan_pairs.{s}.tsv" for s in ("train", "eval", "test")}
    folder = find_dir(
        data_dir,
        ["tsv_data", "aan", "retrieval"],
        list(names.values()),
        "LRA Retrieval (AAN)",
        lra_download_hint("tsv_data"),
    )
    splits = {}
    for split, name in names.items():
        path = _cache_path(data_dir, f"lra_aan_{split}", folder, max_length)
        ds = _to_dataset(load_or_build_cache(path, lambda: read_aan_tsv(folder / name, max_length), rebuild_cache))  # noqa: B023 (closure called in the iteration that defines it)
        splits[split] = ds.subset(slice(0, int(limit))) if limit is not None else ds
    info = TaskInfo(
        name="retrieval",
        d_input=BYTE_VOCAB,
        d_output=2,
        length=max_length,
        kind="classification",
        input_kind="tokens",
        paired=True,
        citation=LRA_CITATION + "; Radev et al. 2013, AAN",
    )
    return TaskData(
        info=info, train=splits["train"], val=splits["eval"], test=splits["test"], extra={"folder": str(folder)}
    )
