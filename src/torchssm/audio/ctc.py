"""CTC decoding (Graves et al. 2006) and the error rates of transcripts.

Emissions are per-frame log-probabilities (T, V) over blank (id 0) and the characters. A labelling
y is the collapse B(pi) of frame paths pi (merge repeats, then drop blanks); its probability sums
over all paths: p(y | x) = sum_{pi in B^-1(y)} prod_t p_t(pi_t).

* :func:`greedy_decode`: B(argmax path), the best path (not always the best labelling).
* :func:`min_frames`: the shortest path of a labelling (its length plus its repeated neighbours).
* :func:`combine_emissions`: the emissions of several models of one alphabet and frame rate, frame by
  frame: ``prob``, log (1/K) sum_k p_t^k (the mean of the posteriors), or ``logprob``, the renormalised
  geometric mean log p_t = (1/K) sum_k log p_t^k - log sum_v exp((1/K) sum_k log p_t^k(v)).
* :func:`prefix_beam_search`: CTC prefix beam search (Hannun et al. 2014, arXiv:1408.2873, Alg. 1):
  for each prefix it keeps the probabilities of the paths so far that end in a blank (p_b) and in its
  last character (p_nb), so repeated characters are merged exactly; with a beam as wide as the number
  of prefixes it returns the most probable labelling. With ``lm=`` (a character n-gram model,
  :mod:`torchssm.audio.lm`) it ranks prefixes by the shallow-fusion score of that module's docstring.
  Its prefixes are int nodes of a trie; :func:`prefix_beam_search_reference` is the plain version, every
  prefix a tuple, with the same signature and result (tests compare them to the bit).

Error rates use ``jiwer`` (word and character error rate: edit distance / reference length, summed
over the utterances); :func:`heldout_word_cer` is the character error rate restricted to chosen
reference words, each compared with the hypothesis word that the word alignment pairs it with.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from operator import itemgetter

import torch

from torchssm.audio.text import BLANK


def _check_emissions(emissions: torch.Tensor) -> torch.Tensor:
    if not isinstance(emissions, torch.Tensor) or emissions.dim() != 2:
        raise ValueError(
            f"expected emissions (frames, vocabulary) as a 2-D tensor, got "
            f"{getattr(emissions, 'shape', type(emissions).__name__)}"
        )
    return emissions.detach().double().cpu()


COMBINE_RULES = ("prob", "logprob")


def check_combine(combine: str) -> str:
    """``combine`` if it names one of :data:`COMBINE_RULES`, else a one-line ValueError."""
    if combine not in COMBINE_RULES:
        raise ValueError(f"combine must be one of {list(COMBINE_RULES)}, got {combine!r}")
    return combine


def combine_emissions(emissions: Sequence[torch.Tensor], combine: str = "prob") -> torch.Tensor:
    """One model's emissions (..., T, V) from K models' log-probabilities over the same frames and outputs:
    ``prob`` the log of the mean probability, ``logprob`` the renormalised mean log-probability (module
    docstring); either is a log-distribution over V at every frame again. One model: returned unchanged."""
    check_combine(combine)
    if not emissions:
        raise ValueError("combine_emissions needs at least one model's emissions, got none")
    shapes = {tuple(e.shape) for e in emissions}
    if len(shapes) != 1:
        raise ValueError(f"the models' emissions must have one shape (same frames, same outputs), got {sorted(shapes)}")
    if len(emissions) == 1:
        return emissions[0]
    stacked = torch.stack(list(emissions))  # (K, ..., T, V)
    if combine == "prob":
        return torch.logsumexp(stacked, dim=0) - math.log(len(emissions))
    return torch.log_softmax(stacked.mean(0), dim=-1)


def collapse(path: Iterable[int], blank: int = BLANK) -> list[int]:
    """B(path): merge repeated ids, then drop blanks."""
    out, previous = [], None
    for p in path:
        p = int(p)
        if p != previous and p != blank:
            out.append(p)
        previous = p
    return out


def greedy_decode(emissions: torch.Tensor, blank: int = BLANK) -> list[int]:
    """Ids of B(argmax_t emissions[t])."""
    return collapse(_check_emissions(emissions).argmax(-1).tolist(), blank)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(
    emissions: torch.Tensor,
    beam: int = 8,
    blank: int = BLANK,
    prune: float = -12.0,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> list[tuple[tuple[int, ...], float]]:
    """[(labelling, score)] of the ``beam`` best prefixes, best first; without ``lm`` the score is
    log p(labelling | x).

    ``prune``: characters with a frame log-probability below it are not tried at that frame.
    ``lm``: a :class:`torchssm.audio.lm.CharNGramLM` over the characters of the emissions (ids 1.. with
    blank 0) for shallow fusion: prefixes are ranked by ``log p_ctc + alpha log p_lm + beta |W|``
    (|W|: words in the prefix) and the final score adds ``alpha log p_lm(</s> | labelling)``
    (Hannun et al. 2014, Alg. 1; Deep Speech 2's objective; :mod:`torchssm.audio.lm`). With
    ``alpha = beta = 0`` the labellings and scores are exactly those without ``lm``.

    The prefixes are nodes of a trie (:class:`_PrefixTrie`), so a prefix is an int and extending, looking
    up and scoring one costs O(1) instead of hashing its whole tuple; the arithmetic and the order of
    every operation are those of :func:`prefix_beam_search_reference`, which gives the same result.
    """
    logp, fusion = _search_inputs(emissions, beam, blank, lm, alpha, beta)
    trie = _PrefixTrie(0 if lm is None else lm.order - 1)
    fused = None if fusion is None else _TrieFusion(fusion, trie)
    inf, logaddexp, children = math.inf, _logaddexp, trie.children

    def rank(node: int, p) -> float:
        total = logaddexp(*p)
        return total if fused is None else total + fused.score(node)

    beams: dict[int, tuple[float, float]] = {ROOT: (0.0, -inf)}  # prefix node -> (log p_b, log p_nb)
    for t in range(logp.shape[0]):
        frame = logp[t].tolist()
        candidates = [c for c, lp in enumerate(frame) if lp >= prune or c == blank]
        nxt: dict[int, list[float]] = {}  # get-or-setdefault below: faster here than a defaultdict (measured)
        for node, (p_b, p_nb) in beams.items():
            total = logaddexp(p_b, p_nb)
            last = trie.last[node]
            for c in candidates:
                lp = frame[c]
                if c == blank:  # the prefix stays, now ending in a blank
                    entry = nxt.get(node) or nxt.setdefault(node, [-inf, -inf])
                    entry[0] = logaddexp(entry[0], total + lp)
                    continue
                child = children.get((node, c))
                if child is None:
                    child = trie.child(node, c)
                entry = nxt.get(child) or nxt.setdefault(child, [-inf, -inf])
                if last == c:
                    # a repeat only extends after a blank; without one it merges into the same prefix
                    entry[1] = logaddexp(entry[1], p_b + lp)
                    same = nxt.get(node) or nxt.setdefault(node, [-inf, -inf])
                    same[1] = logaddexp(same[1], p_nb + lp)
                else:
                    entry[1] = logaddexp(entry[1], total + lp)
        ranked = []  # (rank, node, p) of the live prefixes, in the order they were reached
        for node, p in nxt.items():
            total = logaddexp(p[0], p[1])
            if total > -inf:
                ranked.append((total if fused is None else total + fused.score(node), node, p))
        ranked.sort(key=itemgetter(0), reverse=True)  # stable: equal ranks keep that order, as the reference's sort
        beams = {node: (p[0], p[1]) for _, node, p in ranked[:beam]} or {ROOT: (-inf, -inf)}
    final = [(node, rank(node, p) + (0.0 if fused is None else fused.end(node))) for node, p in beams.items()]
    return [(trie.labelling(node), score) for node, score in sorted(final, key=lambda kv: kv[1], reverse=True)]


ROOT = 0  # the empty prefix's node in a :class:`_PrefixTrie`


class _PrefixTrie:
    """The prefixes of one search as int nodes: node 0 the empty prefix, each other node (its parent, its last
    id); ``tail[node]`` the last ``context`` ids of the prefix (what a language model of that context reads)."""

    def __init__(self, context: int):
        self.context = context
        self.parent, self.last = [-1], [-1]  # the empty prefix ends in no id
        self.tail: list[tuple[int, ...]] = [()]
        self.children: dict[tuple[int, int], int] = {}

    def child(self, node: int, c: int) -> int:
        """The node of prefix(node) + (c,), made on first use."""
        key = (node, c)
        got = self.children.get(key)
        if got is None:
            got = self.children[key] = len(self.parent)
            self.parent.append(node)
            self.last.append(c)
            tail = self.tail[node] + (c,)
            self.tail.append(tail[max(0, len(tail) - self.context) :] if self.context else ())
        return got

    def labelling(self, node: int) -> tuple[int, ...]:
        out = []
        while node != ROOT:
            out.append(self.last[node])
            node = self.parent[node]
        return tuple(reversed(out))


class _TrieFusion:
    """:class:`_Fusion`'s scores of trie nodes, memoised per node; the language model's next-symbol log-probabilities
    read once per parent node, through its ``tail`` (its last order - 1 ids, all that
    ``next_log_probs_after_labels`` reads)."""

    def __init__(self, fusion: _Fusion, trie: _PrefixTrie):
        self.fusion, self.trie = fusion, trie
        self.memo: dict[int, tuple[float, int]] = {ROOT: (0.0, 0)}  # node -> (log p_lm, words)
        self.next_log_probs: dict[int, list[float]] = {}  # node -> log p_lm(. | its prefix), as Python floats

    def _get(self, node: int) -> tuple[float, int]:
        got = self.memo.get(node)
        if got is None:
            trie, f = self.trie, self.fusion
            head, c = trie.parent[node], trie.last[node]
            lp, words = self._get(head)
            after = self.next_log_probs.get(head)
            if after is None:
                after = self.next_log_probs[head] = f.lm.next_log_probs_after_labels(trie.tail[head]).tolist()
            lp += after[c - 1]
            words += c != f.space and (head == ROOT or trie.last[head] == f.space)
            got = self.memo[node] = (lp, words)
        return got

    def score(self, node: int) -> float:
        lp, words = self._get(node)
        return self.fusion.alpha * lp + self.fusion.beta * words

    def end(self, node: int) -> float:
        f = self.fusion
        return f.alpha * float(f.lm.next_log_probs_after_labels(self.trie.tail[node])[f.lm.eos])


def _search_inputs(emissions, beam, blank, lm, alpha, beta) -> tuple[torch.Tensor, _Fusion | None]:
    """The checked emissions and fusion of a prefix beam search (its arguments' one-line errors)."""
    if not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam must be a positive int, got {beam!r}")
    logp = _check_emissions(emissions)
    fusion = None
    if lm is not None:
        if blank != 0 or logp.shape[1] != lm.n_symbols:
            raise ValueError(
                f"the language model predicts {lm.n_symbols - 1} characters: expected emissions over blank 0 "
                f"and those characters ({lm.n_symbols} outputs), got {logp.shape[1]} with blank {blank}"
            )
        fusion = _Fusion(lm, float(alpha), float(beta))
    elif alpha or beta:
        raise ValueError("alpha and beta weigh a language model: pass lm= (torchssm.audio.lm.CharNGramLM)")
    return logp, fusion


def prefix_beam_search_reference(
    emissions: torch.Tensor,
    beam: int = 8,
    blank: int = BLANK,
    prune: float = -12.0,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> list[tuple[tuple[int, ...], float]]:
    """The plain reference of :func:`prefix_beam_search` (same signature and result, labellings and scores): every
    prefix a tuple of ids, the language model's memo keyed by it. [(labelling, score)] of the ``beam`` best
    prefixes, best first; without ``lm`` the score is log p(labelling | x).

    ``prune``: characters with a frame log-probability below it are not tried at that frame.
    ``lm``: a :class:`torchssm.audio.lm.CharNGramLM` over the characters of the emissions (ids 1.. with
    blank 0) for shallow fusion: prefixes are ranked by ``log p_ctc + alpha log p_lm + beta |W|``
    (|W|: words in the prefix) and the final score adds ``alpha log p_lm(</s> | labelling)``
    (Hannun et al. 2014, Alg. 1; Deep Speech 2's objective; :mod:`torchssm.audio.lm`). With
    ``alpha = beta = 0`` the labellings and scores are exactly those without ``lm``.
    """
    logp, fusion = _search_inputs(emissions, beam, blank, lm, alpha, beta)

    def rank(prefix: tuple[int, ...], p) -> float:
        total = _logaddexp(*p)
        return total if fusion is None else total + fusion.score(prefix)

    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (log p_b, log p_nb)
    for t in range(logp.shape[0]):
        frame = logp[t].tolist()
        candidates = [c for c, lp in enumerate(frame) if lp >= prune or c == blank]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (p_b, p_nb) in beams.items():
            total = _logaddexp(p_b, p_nb)
            for c in candidates:
                lp = frame[c]
                if c == blank:  # the prefix stays, now ending in a blank
                    entry = nxt[prefix]
                    entry[0] = _logaddexp(entry[0], total + lp)
                    continue
                extended = prefix + (c,)
                entry = nxt[extended]
                if prefix and prefix[-1] == c:
                    # a repeat only extends after a blank; without one it merges into the same prefix
                    entry[1] = _logaddexp(entry[1], p_b + lp)
                    same = nxt[prefix]
                    same[1] = _logaddexp(same[1], p_nb + lp)
                else:
                    entry[1] = _logaddexp(entry[1], total + lp)
        ranked = sorted(
            ((prefix, p) for prefix, p in nxt.items() if _logaddexp(*p) > -math.inf),
            key=lambda kv: rank(*kv),
            reverse=True,
        )[:beam] or [((), [-math.inf, -math.inf])]
        beams = {prefix: (p[0], p[1]) for prefix, p in ranked}
    final = [(prefix, rank(prefix, p) + (0.0 if fusion is None else fusion.end(prefix))) for prefix, p in beams.items()]
    return sorted(final, key=lambda kv: kv[1], reverse=True)


class _Fusion:
    """``alpha log p_lm(prefix) + beta |W(prefix)|`` of CTC prefixes (ids 1.. = the LM's characters 0..),
    memoised per prefix."""

    def __init__(self, lm, alpha: float, beta: float):
        self.lm, self.alpha, self.beta = lm, alpha, beta
        self.space = lm.index.get(" ", -1) + 1  # the CTC id of the space (0: none)
        self.memo: dict[tuple[int, ...], tuple[float, int]] = {(): (0.0, 0)}  # prefix -> (log p_lm, words)

    def _get(self, prefix: tuple[int, ...]) -> tuple[float, int]:
        got = self.memo.get(prefix)
        if got is None:
            head, c = prefix[:-1], prefix[-1]
            lp, words = self._get(head)
            lp += float(self.lm.next_log_probs_after_labels(head)[c - 1])
            words += c != self.space and (not head or head[-1] == self.space)
            got = self.memo[prefix] = (lp, words)
        return got

    def score(self, prefix: tuple[int, ...]) -> float:
        lp, words = self._get(prefix)
        return self.alpha * lp + self.beta * words

    def end(self, prefix: tuple[int, ...]) -> float:
        return self.alpha * float(self.lm.next_log_probs_after_labels(prefix)[self.lm.eos])


def labelling_log_prob(emissions: torch.Tensor, labels: Sequence[int], blank: int = BLANK) -> float:
    """log p(labels | x) by the CTC forward recursion (``torch.nn.functional.ctc_loss``)."""
    logp = _check_emissions(emissions)
    target = torch.tensor([list(labels)], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        logp[:, None],
        target,
        torch.tensor([logp.shape[0]]),
        torch.tensor([len(labels)]),
        blank=blank,
        reduction="sum",
        zero_infinity=False,
    )
    return -float(loss)


def min_frames(labels: Sequence[int]) -> int:
    """The fewest frames a CTC path of ``labels`` needs: one per label plus a blank between two equal
    neighbours (Graves et al. 2006, Sec. 3.1), so ``p(labels | x) = 0`` on fewer frames."""
    labels = list(labels)
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


# --- error rates ------------------------------------------------------------------------------------------
def _jiwer():
    try:
        import jiwer
    except ImportError as err:
        raise ImportError('error rates need jiwer: pip install "torchssm[audio]"') from err
    return jiwer


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references or any(not r.strip() for r in references):
        raise ValueError("references must be non-empty transcripts")


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER over the corpus (``jiwer.wer``)."""
    _check_pairs(references, hypotheses)
    return float(_jiwer().wer(list(references), list(hypotheses)))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER over the corpus (``jiwer.cer``)."""
    _check_pairs(references, hypotheses)
    return float(_jiwer().cer(list(references), list(hypotheses)))


def paired_cer_difference(
    references: Sequence[str], hypotheses_a: Sequence[str], hypotheses_b: Sequence[str]
) -> tuple[float, float]:
    """(CER of ``hypotheses_a`` - CER of ``hypotheses_b``, its standard error) on the same utterances, paired:
    d_i = edits_i(a) - edits_i(b) (character Levenshtein distances to reference i), the difference sum_i d_i / C and its
    standard error sqrt(n) sd(d) / C (C: the reference characters, held fixed; the utterances as independent draws)."""
    _check_pairs(references, hypotheses_a)
    _check_pairs(references, hypotheses_b)
    if len(references) < 2:
        raise ValueError(f"a paired standard error needs at least 2 utterances, got {len(references)}")
    d = [edit_distance(r, a) - edit_distance(r, b) for r, a, b in zip(references, hypotheses_a, hypotheses_b)]
    chars, n = sum(len(r) for r in references), len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return sum(d) / chars, math.sqrt(n) * sd / chars


def oracle_transcripts(references: Sequence[str], nbest: Sequence[Sequence[str]]) -> list[str]:
    """Per reference, the hypothesis of its n-best list ``nbest[i]`` with the fewest character edits to it (the first
    of ties): the n-best oracle, whose CER is the lowest that any rescoring of these lists can reach."""
    if len(references) != len(nbest):
        raise ValueError(f"{len(references)} references but {len(nbest)} n-best lists")
    if any(not hyps for hyps in nbest):
        raise ValueError("every n-best list needs at least one hypothesis")
    return [min(hyps, key=lambda h: edit_distance(ref, h)) for ref, hyps in zip(references, nbest)]


def heldout_word_cer(references: Sequence[str], hypotheses: Sequence[str], words: Iterable[str]) -> tuple[float, int]:
    """(CER over the reference occurrences of ``words``, number of occurrences); NaN when there are none.

    Each occurrence is paired by jiwer's word alignment with a hypothesis word (a substitution or a
    hit) or with nothing (a deletion: all its characters are errors).
    """
    _check_pairs(references, hypotheses)
    jiwer, words = _jiwer(), set(words)
    output = jiwer.process_words(list(references), [h if h.strip() else "" for h in hypotheses])
    pairs = []
    for ref, hyp, chunks in zip(output.references, output.hypotheses, output.alignments):
        for chunk in chunks:
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                word = ref[chunk.ref_start_idx + k]
                if word in words:
                    aligned = hyp[chunk.hyp_start_idx + k] if chunk.type in ("equal", "substitute") else ""
                    pairs.append((word, aligned))
    if not pairs:
        return float("nan"), 0
    errors = sum(edit_distance(r, h) for r, h in pairs)
    return errors / sum(len(r) for r, _ in pairs), len(pairs)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """The Levenshtein distance between two sequences (strings, labellings): the fewest unit insertions, deletions
    and substitutions that turn ``a`` into ``b``, one row of the dynamic programme at a time."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
