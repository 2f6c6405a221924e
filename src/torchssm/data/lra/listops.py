"""LRA ListOps: a faithful, seeded generator of the official TSV files, and their reader.

The task (Nangia & Bowman 2018; LRA version, Tay et al. 2021, Sec. 3.1): evaluate a nested
expression of the operators MIN, MAX, MED (median, truncated to an integer) and SM (sum mod 10)
over the digits 0-9; 10 classes. The LRA generator (google-research/long-range-arena,
``lra_benchmarks/data/listops.py``) draws a tree recursively: below ``max_depth`` = 10 a node is a
value (leaf) with probability 0.75 - it draws r = random() and makes a leaf when r > ``VALUE_P`` =
0.25 - and always at the maximum depth; otherwise an operator drawn uniformly with
2..``max_args`` = 10 arguments; it keeps trees whose length - counted over values, operators and
closing ``]`` but not the ``( )`` wrappers - is strictly between 500 and 2000, and serialises
them left-leaning::

    [MAX 2 9 [MIN 4 7 ] 0 ]  ->  ( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )

96000 / 2000 / 2000 train / val / test examples, written as ``basic_{train,val,test}.tsv`` with a
header ``Source<TAB>Target``. The original splits a Python ``set`` of trees in iteration order,
which depends on the hash seed; here the distinct expressions are sorted and then shuffled with
the run seed before the split, so the files are a pure function of (seed, options). Candidates are
drawn in chunks, chunk c from ``random.Random`` seeded by (seed, c), in parallel worker processes
(the result does not depend on the number of workers). A candidate tree is abandoned as soon as it
outgrows ``max_length``: that changes which random numbers are used, not the distribution of the
kept trees (rejection sampling on the length).

Reader: tokens are the 15 symbols (digits, 4 operators, ``]``); the ``( )`` wrappers are dropped as
in the state-spaces/s4 ListOps loader; ids 1..15 (0 = padding), padded to 2000 steps
(``max_length`` of LRA).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from pathlib import Path

import torch

from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.lra.common import (
    LRA_CITATION,
    DataFormatError,
    data_source,
    find_dir,
    imap_ordered,
    lra_download_hint,
    mark_generated,
    pad_rows,
    parse_label,
    read_tsv,
)
from torchssm.data.registry import TaskData, TaskInfo, register_task

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # LRA listops.py VALUE_P: a node is a leaf when random() > VALUE_P, i.e. with probability 0.75
# LRA listops.py flags: num_train_samples, num_valid_samples, num_test_samples, max_depth, max_args,
# min_length, max_length.
LRA_DEFAULTS = {
    "num_train": 96000,
    "num_val": 2000,
    "num_test": 2000,
    "max_depth": 10,
    "max_args": 10,
    "min_length": 500,
    "max_length": 2000,
}
VOCAB = ["<pad>"] + [str(v) for v in range(10)] + list(OPERATORS) + [END]  # ids 0..15
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
SEQ_LENGTH = 2000  # LRA ListOps max_length
CHUNK = 200  # candidate trees per chunk
logger = logging.getLogger(__name__)


class _TooLong(Exception):
    pass


def apply_op(op: str, args: list[int]) -> int:
    """The value of ``[op args ]``: MIN, MAX, MED (int(np.median): truncated mean of the middle pair), SM."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    if op == "[MED":
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else int((s[n // 2 - 1] + s[n // 2]) / 2)
    raise ValueError(f"unknown ListOps operator {op!r}")


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: list[int]) -> tuple[str, int]:
    """One (sub)tree as (left-leaning string, value); ``budget[0]`` counts its length so far."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        budget[0] += 1
        if budget[0] >= budget[1]:
            raise _TooLong
        v = rng.choice(range(10))
        return str(v), v
    budget[0] += 2  # the operator and its closing bracket
    n_args = rng.randint(2, max_args)
    children = [generate_tree(rng, depth + 1, max_depth, max_args, budget) for _ in range(n_args)]
    op = rng.choice(OPERATORS)
    text = f"( {op} {children[0][0]} )"
    for child, _ in children[1:]:
        text = f"( {text} {child} )"
    return f"( {text} {END} )", apply_op(op, [v for _, v in children])


def expression_length(source: str) -> int:
    """Length as the generator counts it: every token except the ``( )`` wrappers."""
    return sum(1 for tok in source.split() if tok not in ("(", ")"))


def _chunk_seed(seed: int, chunk: int) -> int:
    return int.from_bytes(hashlib.sha256(f"listops:{seed}:{chunk}".encode()).digest()[:8], "little")


def generate_chunk(args: tuple[int, int, dict]) -> list[tuple[str, int]]:
    """Candidate trees of chunk ``c`` (those of accepted length) as (source, target)."""
    seed, c, opts = args
    rng = random.Random(_chunk_seed(seed, c))
    out = []
    for _ in range(CHUNK):
        budget = [0, opts["max_length"]]
        try:
            source, value = generate_tree(rng, 1, opts["max_depth"], opts["max_args"], budget)
        except _TooLong:
            continue
        if opts["min_length"] < budget[0] < opts["max_length"]:
            out.append((source, value))
    return out


def generate_listops(
    seed: int = 0, num_workers: int | None = None, progress: bool = True, **options
) -> dict[str, list[tuple[str, int]]]:
    """{"train", "val", "test"} lists of (source, target); ``options`` override :data:`LRA_DEFAULTS`."""
    opts = dict(LRA_DEFAULTS)
    unknown = set(options) - set(opts)
    if unknown:
        raise ValueError(f"unknown ListOps generator option(s) {sorted(unknown)}; expected some of {sorted(opts)}")
    opts.update({k: int(v) for k, v in options.items()})
    if not (0 <= opts["min_length"] < opts["max_length"] and opts["max_depth"] >= 1 and opts["max_args"] >= 2):
        raise ValueError(f"bad ListOps generator options {opts}")
    total = opts["num_train"] + opts["num_val"] + opts["num_test"]
    found: dict[str, int] = {}
    from tqdm import tqdm

    bar = tqdm(total=total, desc="ListOps", unit="expr", disable=not progress)
    chunk, step = 0, 4 * (num_workers or 4)
    try:
        while len(found) < total:
            # chunks are consumed in order, so the result does not depend on the number of workers
            for res in imap_ordered(generate_chunk, [(seed, c, opts) for c in range(chunk, chunk + step)], num_workers):
                for source, value in res:
                    if len(found) < total and source not in found:
                        found[source] = value
                        bar.update(1)
            chunk += step
            if chunk * CHUNK > 50_000_000 and not found:
                raise RuntimeError(
                    f"no ListOps expression of length in ({opts['min_length']}, {opts['max_length']}) "
                    f"after {chunk * CHUNK} candidates; check the options"
                )
    finally:
        bar.close()
    examples = sorted(found.items())
    random.Random(seed).shuffle(examples)
    a, b = opts["num_train"], opts["num_train"] + opts["num_val"]
    return {"train": examples[:a], "val": examples[a:b], "test": examples[b:]}


def write_tsv(examples: list[tuple[str, int]], path: Path) -> None:
    """The official format: header ``Source<TAB>Target``, one expression and its value per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tsv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Source", "Target"])
        for source, target in examples:
            writer.writerow([source, target])
    tmp.replace(path)


def generated_dir(data_dir, seed: int, options: dict) -> Path:
    """``listops-gen-seed<seed>`` for the LRA settings, else ``listops-gen-<hash>``: never the
    release's own folder name, so a generated set cannot pass for the release."""
    opts = {**LRA_DEFAULTS, **{k: int(v) for k, v in options.items()}}
    if opts == LRA_DEFAULTS:
        return resolve_data_dir(data_dir) / f"listops-gen-seed{seed}"
    key = hashlib.sha256(json.dumps({"seed": seed, **opts}, sort_keys=True).encode()).hexdigest()[:10]
    return resolve_data_dir(data_dir) / f"listops-gen-{key}"


def write_listops(out_dir, seed: int = 0, num_workers: int | None = None, progress: bool = True, **options) -> Path:
    """Generate and write ``basic_{train,val,test}.tsv`` into ``out_dir`` (marked as generated,
    :func:`~torchssm.data.lra.common.mark_generated`); returns the folder."""
    out_dir = Path(out_dir)
    splits = generate_listops(seed=seed, num_workers=num_workers, progress=progress, **options)
    for name, examples in splits.items():
        write_tsv(examples, out_dir / f"basic_{name}.tsv")
    mark_generated(out_dir, task="listops", seed=seed, **{**LRA_DEFAULTS, **options})
    return out_dir


def tokenize(source: str, path: Path, lineno: int) -> torch.Tensor:
    ids = []
    for tok in source.split():
        if tok in ("(", ")"):
            continue
        i = TOKEN_ID.get(tok)
        if i is None or i == 0:
            raise DataFormatError(
                f"{path}:{lineno}: unknown ListOps token {tok!r}; expected digits, {', '.join(OPERATORS)} or ']'"
            )
        ids.append(i)
    return torch.tensor(ids, dtype=torch.long)


def read_listops_tsv(path, max_length: int = SEQ_LENGTH) -> TensorDictDataset:
    """inputs (n, max_length) long, lengths (n,), targets (n,) long, from an official TSV file."""
    path = Path(path)
    rows, targets = [], []
    for lineno, (source, target) in read_tsv(path, 2, header=("Source", "Target")):
        ids = tokenize(source, path, lineno)
        if ids.numel() == 0:
            raise DataFormatError(f"{path}:{lineno}: empty ListOps expression")
        rows.append(ids[:max_length])
        targets.append(parse_label(target, 10, path, lineno))
    if not rows:
        raise DataFormatError(f"{path}: no examples")
    inputs, lengths = pad_rows(rows, max_length)
    return TensorDictDataset(inputs=inputs, targets=torch.tensor(targets), lengths=lengths)


@register_task("listops", "LRA ListOps: evaluate nested MIN/MAX/MED/SM expressions; 10 classes, length 2000")
def build(
    data_dir=None,
    seed: int = 0,
    generate: bool = False,
    num_workers: int | None = None,
    max_length: int = SEQ_LENGTH,
    limit: int | None = None,
    **generator_options,
) -> TaskData:
    """LRA ListOps from ``basic_{train,val,test}.tsv``.

    The official release (``listops-1000`` under the data root or its ``lra_release/``) is
    preferred; without it, with ``generate=True``, the files are generated (seeded by ``seed``) into
    ``<data root>/listops-gen-seed<seed>`` (LRA settings) or ``listops-gen-<hash>`` (other
    ``generator_options``: num_train, num_val, num_test, max_depth, max_args, min_length,
    max_length_expr). ``info.source`` says which was read ("release" or "generated"), and so does
    an INFO log line. ``max_length`` is the padded sequence length; ``limit`` caps each split.
    """
    gen_opts = {("max_length" if k == "max_length_expr" else k): v for k, v in generator_options.items()}
    unknown = set(gen_opts) - set(LRA_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown listops option(s) {sorted(unknown)}")
    required = [f"basic_{s}.tsv" for s in ("train", "val", "test")]
    hint = lra_download_hint("listops-1000") + " Or generate it offline with the option generate=True."
    try:
        if gen_opts:
            raise FileNotFoundError  # non-LRA generator settings: only the generated folder fits
        # the release first (find_dir puts generated folders last), then a generated LRA-sized set
        folder = find_dir(
            data_dir, ["listops-1000", "listops", generated_dir(data_dir, seed, {}).name], required, "LRA ListOps", hint
        )
    except FileNotFoundError as err:
        folder = generated_dir(data_dir, seed, gen_opts)
        if not all((folder / r).exists() for r in required):
            if not generate:
                raise FileNotFoundError(
                    str(err) if str(err) else f"generated ListOps files not found in {folder}; pass generate=True"
                ) from None
            write_listops(folder, seed=seed, num_workers=num_workers, **gen_opts)
    source = data_source(folder)
    logger.info("ListOps: reading the %s files in %s", source, folder)
    splits = {s: read_listops_tsv(folder / f"basic_{s}.tsv", max_length) for s in ("train", "val", "test")}
    if limit is not None:
        splits = {s: d.subset(slice(0, int(limit))) for s, d in splits.items()}
    info = TaskInfo(
        name="listops",
        d_input=len(VOCAB),
        d_output=10,
        length=max_length,
        kind="classification",
        input_kind="tokens",
        citation=LRA_CITATION + "; Nangia & Bowman 2018, ListOps",
        source=source,
    )
    return TaskData(
        info=info, train=splits["train"], val=splits["val"], test=splits["test"], extra={"folder": str(folder)}
    )
