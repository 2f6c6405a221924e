"""Batches of utterances for the speech recognisers: padding items ``{"audio", "text"}`` into tensors
(:func:`collate`) and grouping utterances of similar length (:func:`length_batches`, sorted within pools of
batches, as is usual for speech, in an order that depends only on the generator)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchssm.audio.text import CharVocabulary


def collate(items: Sequence[dict], vocab: CharVocabulary) -> dict[str, torch.Tensor]:
    """Right-padded audio (b, n_max), lengths (b,), character ids (b, u_max) padded with 0, lengths (b,)."""
    lengths = torch.tensor([len(it["audio"]) for it in items])
    audio = torch.zeros(len(items), int(lengths.max()))
    for i, it in enumerate(items):
        audio[i, : len(it["audio"])] = torch.as_tensor(it["audio"])
    ids = [vocab.encode(it["text"]) for it in items]
    target_lengths = torch.tensor([len(t) for t in ids])
    targets = torch.zeros(len(items), int(target_lengths.max()), dtype=torch.long)
    for i, t in enumerate(ids):
        targets[i, : len(t)] = torch.tensor(t)
    return {"audio": audio, "audio_lengths": lengths, "targets": targets, "target_lengths": target_lengths}


def length_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, pool: int = 50
) -> list[list[int]]:
    """Shuffled indices, sorted by length within pools of ``pool`` batches, cut into batches, batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = sorted(order[start : start + pool * batch_size], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[p] for p in perm]
