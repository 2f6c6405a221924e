"""Variable-length sequences: padding with a lengths mask, and packing with a ``reset`` mask.

Glossary: b = batch size, l = (padded / packed row) length, t = total tokens, n = sequences.

Padding (:func:`pad_sequences`, :func:`pad_collate`): sequences of lengths l_i are right-padded
to l = max l_i; ``lengths`` (b,) gives the true lengths and :func:`lengths_to_mask` the (b, l)
validity mask. A causal layer's output at step s < l_i never sees padding, so only pooling and
the loss need the mask.

Packing (:func:`pack_sequences`): sequences are laid end to end in rows of ``row_length``
(first-fit, in order), with

    reset[r, s] = True  where a new sequence starts at step s of row r,
    cu_seqlens           cumulative lengths (n+1,) int32 over the flattened rows (FlashAttention /
                         Mamba varlen convention), with the row padding counted as segments of
                         its own, so ``cu_seqlens`` always partitions all b*l positions.

A resettable scan ``h_t = a_t * h_{t-1} * (1 - reset_t) + b_t`` (``torchssm.ops.scan.linear_scan(...,
reset=reset)``) on the packed rows gives every sequence exactly the outputs it gets alone (the
padding at a row's end is a segment of its own, so it never leaks into a real sequence).
:func:`unpack_sequences` maps the packed outputs back to the list of sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def _check_sequences(seqs: Sequence[torch.Tensor]) -> None:
    if len(seqs) == 0:
        raise ValueError("expected a non-empty list of sequences, each of shape (length, ...) ")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor) or s.dim() < 1:
            raise TypeError(f"sequence {i} must be a tensor of shape (length, ...); got {type(s).__name__}")
        if s.shape[0] == 0:
            raise ValueError(f"sequence {i} is empty; expected shape (length>=1, ...)")
        if s.shape[1:] != first.shape[1:] or s.dtype != first.dtype:
            raise ValueError(
                f"sequence {i} has shape {tuple(s.shape)} and dtype {s.dtype}; expected "
                f"(length, {', '.join(map(str, first.shape[1:]))}) and {first.dtype} like sequence 0"
            )


def lengths_to_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """(b,) lengths -> (b, l) bool mask, True at valid steps."""
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError(f"lengths must be a tensor of shape (batch,); got {getattr(lengths, 'shape', lengths)}")
    max_length = int(lengths.max()) if max_length is None else int(max_length)
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]  # (b, l)


def pad_sequences(seqs: Sequence[torch.Tensor], pad_value=0, length: int | None = None) -> torch.Tensor:
    """Right-pad (l_i, ...) tensors to (b, l, ...), l = ``length`` or max l_i."""
    _check_sequences(seqs)
    longest = max(s.shape[0] for s in seqs)
    length = longest if length is None else int(length)
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest sequence ({longest})")
    out = seqs[0].new_full((len(seqs), length, *seqs[0].shape[1:]), pad_value)  # (b, l, ...)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out


def pad_collate(
    batch: Sequence[dict[str, torch.Tensor]], pad_value=0, ignore_index: int = -100, length: int | None = None
) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn`` for examples with variable-length "inputs" (and "inputs2").

    Per-step tensors ("inputs", "inputs2", and "targets" when it has the length of "inputs")
    are padded (inputs with ``pad_value``, targets with ``ignore_index``); "lengths" (b,) and, for
    paired examples, "lengths2" are added; everything else is stacked.
    """
    if len(batch) == 0 or "inputs" not in batch[0]:
        raise ValueError("pad_collate expects a non-empty list of dicts with an 'inputs' tensor")
    out: dict[str, torch.Tensor] = {}
    lengths = torch.tensor([ex["inputs"].shape[0] for ex in batch])
    out["inputs"] = pad_sequences([ex["inputs"] for ex in batch], pad_value, length)
    out["lengths"] = lengths
    if "inputs2" in batch[0]:
        out["inputs2"] = pad_sequences([ex["inputs2"] for ex in batch], pad_value, length)
        out["lengths2"] = torch.tensor([ex["inputs2"].shape[0] for ex in batch])
    for key in batch[0]:
        if key in out or key in ("inputs2",):
            continue
        values = [ex[key] for ex in batch]
        per_step = (
            key == "targets" and values[0].dim() >= 1 and all(v.shape[0] == n for v, n in zip(values, lengths.tolist()))
        )
        out[key] = pad_sequences(values, ignore_index, out["inputs"].shape[1]) if per_step else torch.stack(values)
    return out


@dataclass
class Packed:
    """Sequences packed into rows: data (b, l, ...), reset (b, l) bool, cu_seqlens (segments+1,) int32.

    ``index[k] = (row, start, length)`` locates sequence k; ``valid`` (b, l) is False on row padding.
    """

    data: torch.Tensor
    reset: torch.Tensor
    valid: torch.Tensor
    cu_seqlens: torch.Tensor
    index: list[tuple]


def pack_sequences(seqs: Sequence[torch.Tensor], row_length: int | None = None, pad_value=0) -> Packed:
    """Pack (l_i, ...) sequences into rows of ``row_length`` (default: one row holding everything).

    First fit in the given order: sequence k goes into the first row with room for it. A
    sequence longer than ``row_length`` is an error (split it first).
    """
    _check_sequences(seqs)
    lens = [int(s.shape[0]) for s in seqs]
    row_length = sum(lens) if row_length is None else int(row_length)
    if max(lens) > row_length:
        raise ValueError(f"a sequence of length {max(lens)} does not fit in rows of length {row_length}")
    fill: list[int] = []  # used length of each row
    index = []
    for n in lens:
        row = next((r for r, used in enumerate(fill) if used + n <= row_length), None)
        if row is None:
            fill.append(0)
            row = len(fill) - 1
        index.append((row, fill[row], n))
        fill[row] += n
    b = len(fill)
    data = seqs[0].new_full((b, row_length, *seqs[0].shape[1:]), pad_value)  # (b, l, ...)
    reset = torch.zeros(b, row_length, dtype=torch.bool)  # (b, l)
    valid = torch.zeros(b, row_length, dtype=torch.bool)  # (b, l)
    for s, (row, start, n) in zip(seqs, index):
        data[row, start : start + n] = s
        reset[row, start] = True
        valid[row, start : start + n] = True
    # Row padding starts a segment of its own (reset there too), so cu_seqlens partitions b*l.
    for row, used in enumerate(fill):
        if used < row_length:
            reset[row, used] = True
    starts = (reset.clone()).flatten()
    starts[torch.arange(b) * row_length] = True  # every row starts a segment
    bounds = starts.nonzero().flatten().tolist() + [b * row_length]
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    return Packed(data=data, reset=reset, valid=valid, cu_seqlens=cu_seqlens, index=index)


def unpack_sequences(packed_out: torch.Tensor, packed: Packed) -> list[torch.Tensor]:
    """Split outputs (b, l, ...) computed on ``packed.data`` back into the original sequences."""
    if packed_out.shape[:2] != packed.data.shape[:2]:
        raise ValueError(
            f"packed outputs must have shape (b, l, ...)={tuple(packed.data.shape[:2])} + (...); "
            f"got {tuple(packed_out.shape)}"
        )
    return [packed_out[row, start : start + n] for row, start, n in packed.index]


def cu_seqlens_to_reset(cu_seqlens: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """(segments+1,) cumulative lengths over the flattened (batch, length) -> reset (batch, length) bool."""
    if cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != batch * length:
        raise ValueError(
            f"cu_seqlens must be 1-D, start at 0 and end at batch*length={batch * length}; got {cu_seqlens.tolist()}"
        )
    reset = torch.zeros(batch * length, dtype=torch.bool)
    reset[cu_seqlens[:-1].long()] = True
    return reset.view(batch, length)


def reset_to_cu_seqlens(reset: torch.Tensor) -> torch.Tensor:
    """reset (batch, length) bool -> cumulative segment lengths (segments+1,) int32 (rows always split)."""
    if reset.dim() != 2 or reset.dtype != torch.bool:
        raise ValueError(
            f"reset must be a bool tensor of shape (batch, length); got {tuple(reset.shape)} {reset.dtype}"
        )
    b, l = reset.shape
    starts = reset.clone()
    starts[:, 0] = True
    return torch.tensor(starts.flatten().nonzero().flatten().tolist() + [b * l], dtype=torch.int32)
