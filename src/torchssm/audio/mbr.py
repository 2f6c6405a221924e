"""Minimum Bayes risk (MBR) choice from an n-best list: the hypothesis of least expected character edit distance under
the list's posterior, instead of the most probable one (N-best MBR: Stolcke, Konig & Weintraub 1997, "Explicit word
error minimization in N-best list rescoring", Eurospeech; Goel & Byrne 2000, "Minimum Bayes-risk automatic speech
recognition", Computer Speech & Language 14(2). Both state it for words; here the loss is CER's, characters).

For one utterance's n-best list h_1 .. h_n with search scores s_i (the prefix beam search's fused score, log p_ctc +
alpha log p_lm + beta words: :func:`~torchssm.audio.ctc.prefix_beam_search`), the posterior is the list's, sharpened
by a scale lambda >= 0,

    p_i = exp(lambda s_i) / sum_k exp(lambda s_k),

and the MBR choice is argmin_j sum_i p_i d(h_j, h_i), d the Levenshtein distance between the character sequences (the
numerator of CER). Large lambda gives the search's own best; lambda = 0 the list's medoid. Ties go to the better
ranked hypothesis. The scale is chosen on val (:func:`~torchssm.audio.decoding.tuned_decoding`'s ``mbr_scales``).
:func:`edit_distances` is compiled with numba; :func:`edit_distances_reference` is the plain version, the same result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from torchssm.audio.ctc import edit_distance


def edit_distances_reference(labellings: Sequence[Sequence[int]]) -> np.ndarray:
    """(n, n) int64: the Levenshtein distance (:func:`~torchssm.audio.ctc.edit_distance`) between every two of
    ``labellings`` (sequences of ints)."""
    n = len(labellings)
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = edit_distance(labellings[i], labellings[j])
    return out


@njit(cache=True)
def _edit_distances(flat, offsets):  # pragma: no cover - compiled; edit_distances_reference is its plain twin
    n = len(offsets) - 1
    out = np.zeros((n, n), dtype=np.int64)
    longest = 0
    for i in range(n):
        longest = max(longest, offsets[i + 1] - offsets[i])
    row = np.empty(longest + 1, dtype=np.int64)
    for i in range(n):
        a = flat[offsets[i] : offsets[i + 1]]
        for j in range(i + 1, n):
            b = flat[offsets[j] : offsets[j + 1]]
            for q in range(len(b) + 1):
                row[q] = q
            for p in range(len(a)):
                diagonal = row[0]
                row[0] = p + 1
                for q in range(len(b)):
                    above = row[q + 1]
                    row[q + 1] = min(above + 1, row[q] + 1, diagonal + (1 if a[p] != b[q] else 0))
                    diagonal = above
            out[i, j] = row[len(b)]
            out[j, i] = row[len(b)]
    return out


def edit_distances(labellings: Sequence[Sequence[int]]) -> np.ndarray:
    """:func:`edit_distances_reference`, compiled (the labellings packed into one array and their offsets)."""
    lengths = [len(y) for y in labellings]
    offsets = np.zeros(len(labellings) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    flat = np.fromiter((int(c) for y in labellings for c in y), dtype=np.int64, count=int(offsets[-1]))
    return _edit_distances(flat, offsets)


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"an MBR scale must be a finite number >= 0 (the posterior's sharpness), got {scale!r}")
    return float(scale)


def mbr_index(scores: Sequence[float], distances: np.ndarray, scale: float) -> int:
    """The index of the MBR choice in a list with these search ``scores`` (best first) and pairwise ``distances``
    ((n, n), :func:`edit_distances`) under the posterior sharpened by ``scale`` (see the module docstring)."""
    s = check_scale(scale) * np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        raise ValueError("an n-best list needs at least one hypothesis")
    if distances.shape != (len(s), len(s)):
        raise ValueError(f"distances must be ({len(s)}, {len(s)}) for {len(s)} hypotheses, got {distances.shape}")
    posterior = np.exp(s - s.max())
    risks = distances @ (posterior / posterior.sum())  # (n,): risk_j = sum_i p_i d(h_j, h_i)
    return int(np.argmin(risks))  # the first of ties: the better ranked


def list_distances(lists: Sequence[Sequence]) -> list[np.ndarray]:
    """Per n-best list ([(labelling, search score, ...)], e.g. ``LoadedRuns.scored_nbest``'s): its pairwise
    :func:`edit_distances`, computed once for every scale tried."""
    return [edit_distances([list(entry[0]) for entry in items]) for items in lists]


def mbr_transcripts(lists: Sequence[Sequence], vocab, scale: float, distances: Sequence[np.ndarray] | None = None):
    """The MBR transcript of each n-best list of ``lists`` ([(labelling, search score, ...)], best first) at
    ``scale`` (``distances``: :func:`list_distances` of the lists, computed here when None)."""
    distances = list_distances(lists) if distances is None else distances
    if len(distances) != len(lists):
        raise ValueError(f"{len(lists)} n-best lists but {len(distances)} distance matrices")
    out = []
    for items, d in zip(lists, distances):
        out.append(vocab.decode(items[mbr_index([entry[1] for entry in items], d, scale)][0]))
    return out
