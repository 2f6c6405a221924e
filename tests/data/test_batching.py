"""Padding and packing: masks, cu_seqlens, and packed resettable scan == one scan per sequence."""

import pytest
import torch
from torch.utils.data import DataLoader

from torchssm.data.batching import (
    cu_seqlens_to_reset,
    lengths_to_mask,
    pack_sequences,
    pad_collate,
    pad_sequences,
    reset_to_cu_seqlens,
    unpack_sequences,
)
from torchssm.ops.scan import linear_scan


def _seqs(lengths, d=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, d, generator=g, dtype=dtype) for n in lengths]


def test_pad_and_mask():
    seqs = _seqs([3, 5, 1])
    x = pad_sequences(seqs, pad_value=0.0)
    assert x.shape == (3, 5, 3)
    mask = lengths_to_mask(torch.tensor([3, 5, 1]))
    assert mask.tolist()[2] == [True, False, False, False, False]
    torch.testing.assert_close(x[mask], torch.cat(seqs))
    assert bool((x[~mask] == 0).all())
    with pytest.raises(ValueError, match="shorter"):
        pad_sequences(seqs, length=4)
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([torch.zeros(0, 3)])
    with pytest.raises(ValueError, match="expected"):
        pad_sequences([torch.zeros(2, 3), torch.zeros(2, 4)])


def test_pad_collate_in_a_dataloader():
    items = [{"inputs": torch.arange(n) + 1, "targets": torch.arange(n), "label": torch.tensor(n)} for n in (2, 4, 3)]
    items[1]["inputs2"] = torch.ones(1, dtype=torch.long)
    for it in items:
        it.setdefault("inputs2", torch.ones(5, dtype=torch.long))
    batch = next(iter(DataLoader(items, batch_size=3, collate_fn=pad_collate)))
    assert batch["inputs"].tolist() == [[1, 2, 0, 0], [1, 2, 3, 4], [1, 2, 3, 0]]
    assert batch["targets"].tolist()[0] == [0, 1, -100, -100]
    assert batch["lengths"].tolist() == [2, 4, 3] and batch["lengths2"].tolist() == [5, 1, 5]
    assert batch["inputs2"].shape == (3, 5) and batch["label"].tolist() == [2, 4, 3]


def test_pack_layout_and_cu_seqlens():
    seqs = _seqs([3, 4, 2, 5])
    p = pack_sequences(seqs, row_length=6)
    # first fit: row0 = [3, 2] + 1 pad, row1 = [4] + 2 pad, row2 = [5] + 1 pad
    assert p.index == [(0, 0, 3), (1, 0, 4), (0, 3, 2), (2, 0, 5)]
    assert p.data.shape == (3, 6, 3) and p.reset.shape == (3, 6) and p.reset.dtype == torch.bool
    assert p.reset[0].tolist() == [True, False, False, True, False, True]
    assert p.cu_seqlens.dtype == torch.int32
    assert p.cu_seqlens.tolist() == [0, 3, 5, 6, 10, 12, 17, 18]
    torch.testing.assert_close(cu_seqlens_to_reset(p.cu_seqlens, 3, 6), p.reset | _row_starts(3, 6))
    torch.testing.assert_close(reset_to_cu_seqlens(p.reset), p.cu_seqlens)
    assert int(p.valid.sum()) == 14
    for s, u in zip(seqs, unpack_sequences(p.data, p)):
        torch.testing.assert_close(s, u)
    with pytest.raises(ValueError, match="does not fit"):
        pack_sequences(seqs, row_length=4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        cu_seqlens_to_reset(torch.tensor([0, 3]), 3, 6)


def _row_starts(b, l):
    r = torch.zeros(b, l, dtype=torch.bool)
    r[:, 0] = True
    return r


@pytest.mark.parametrize("row_length", [None, 7])
def test_packed_resettable_scan_equals_separate_scans(row_length):
    lengths = [3, 4, 2, 5, 1]
    b_seqs = _seqs(lengths, d=4, dtype=torch.complex128)
    a_seqs = [0.9 * torch.exp(1j * torch.rand(n, 4, dtype=torch.float64)) for n in lengths]
    pb, pa = pack_sequences(b_seqs, row_length), pack_sequences(a_seqs, row_length)
    assert torch.equal(pb.reset, pa.reset)
    h = linear_scan(pa.data, pb.data, reset=pb.reset, backend="naive")  # (rows, l, 4)
    for a, b, out in zip(a_seqs, b_seqs, unpack_sequences(h, pb)):
        torch.testing.assert_close(out, linear_scan(a[None], b[None], backend="naive")[0])
