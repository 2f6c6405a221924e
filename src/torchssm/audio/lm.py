"""A character n-gram language model with interpolated Kneser-Ney smoothing, for CTC shallow fusion.

:class:`CharNGramLM` predicts the next character of a transcript (the 28 characters of
:data:`torchssm.audio.text.ALPHABET` and an end-of-sentence symbol ``</s>``) from the ``order - 1``
characters before it; a sentence starts after ``order - 1`` begin symbols ``<s>`` (never predicted).
Smoothing: interpolated Kneser-Ney (Kneser & Ney 1995; the interpolated form of Chen & Goodman 1998,
"An empirical study of smoothing techniques for language modeling", TR-10-98, with one absolute
discount per order)::

    p_k(w | h) = (max(c_k(h w) - D_k, 0) + D_k N_k(h .) p_{k-1}(w | h')) / c_k(h .)

where h' is h without its first character, c_n are the raw counts of the n-grams, c_k (k < n) the
continuation counts (the number of distinct characters seen before ``h w``), ``c_k(h .)`` their sum
over w, ``N_k(h .)`` the number of distinct w with ``c_k(h w) > 0``; a context never seen at order k
passes straight to order k - 1; order 1 interpolates with the uniform distribution over the 29
symbols, so every character has a positive probability. Discounts: ``D_k = n1 / (n1 + 2 n2)`` from
the numbers of order-k counts equal to 1 and 2 (Ney, Essen & Kneser 1994, the estimate Chen & Goodman
use), 0.5 where that is undefined or 0 (our choice, UNVERIFIED). Each p_k sums to 1 over the symbols
(tested in float64).

Shallow fusion (:func:`torchssm.audio.ctc.prefix_beam_search` with ``lm=``): the prefixes are ranked
by ``log p_ctc(l | x) + alpha log p_lm(l) + beta |W(l)|`` where |W(l)| is the number of words of the
prefix l, and the finished labellings add ``alpha log p_lm(</s> | l)``. This is Deep Speech 2's
decoding objective (Amodei et al. 2016, "Deep Speech 2", arXiv:1512.02595, the language-model section:
``Q(y) = log p_ctc(y|x) + alpha log p_lm(y) + beta word_count(y)``; section number UNVERIFIED) searched
by the CTC prefix beam search of Hannun, Maas, Jurafsky & Ng 2014 (arXiv:1408.2873, Alg. 1, whose
language model is applied with weight alpha and whose insertion bonus is |W|^beta, i.e. beta log |W|
in the log domain: we use the linear word count of Deep Speech 2; the exact wording of both papers is
UNVERIFIED here: we could read only secondary descriptions). A character language model applies at
every character instead of at word ends, so it also scores partial and unseen words.

Text of another domain can be pooled into the counts (``extra_texts``) or kept as a second model and interpolated
(:class:`InterpolatedLM`): ``p(w | h) = lambda p_in(w | h) + (1 - lambda) p_out(w | h)`` (Jelinek & Mercer 1980,
"Interpolated estimation of Markov source parameters from sparse data"), lambda chosen on held-out text by bits per
character (:func:`best_mix_weight`; as SRILM's ``compute-best-mix`` chooses ``ngram -mix-lm``'s weight by
perplexity). On ``spoken_sentences``, pooling other packages' docstrings raised val's bits per character yet lowered
test CER; the mixture lowers val's bits and is unmeasured on test (RESULTS.md, Speech, sessions 18 and 32).

The model is built from the training transcripts only (:func:`lm_from_task`): the val and test
sentences and the held-out words of ``spoken_sentences`` never reach it. Text added to it
(:func:`lm_from_checkpoint`'s ``extra_texts``, ``torchssm transcribe --lm-text``, as LibriSpeech's separate LM corpus,
Panayotov et al. 2015) is the user's to keep free of test sentences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from torchssm.audio.text import ALPHABET

# the shallow-fusion grid of record: grid (2) of RESULTS.md, Speech (session 12), at beam 16, which every offline CTC
# result since chose its setting on val from (decoding.tuned_decoding, `torchssm speech decode`)
GRID_ORDERS, GRID_ALPHAS, GRID_BETAS, GRID_BEAM = (10, 12, 16), (0.6, 0.8, 1.0, 1.2), (3.0, 4.0, 5.0, 6.0), 16
# the in-domain weights best_mix_weight tries (our grid, UNVERIFIED as a choice; 1.0 keeps the in-domain model alone)
MIX_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
_CACHE_LIMIT = 500_000  # next-symbol distributions kept per model before its cache is emptied


class CharModel:
    """What every character model here offers once it has ``order``, ``eos``, ``bos``, ``encode`` and
    ``_log_probs(context)``: the next-symbol distribution cached per context, and the readings the searches and the
    evaluations use."""

    order: int
    eos: int
    bos: int
    _cache: dict[tuple[int, ...], np.ndarray]

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _log_probs(self, context: tuple[int, ...]) -> np.ndarray:
        """log p(next symbol | ``context``), ``context`` as :meth:`context_ids` gives it (uncached)."""
        raise NotImplementedError

    def context_ids(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """The model's context after the symbol ids ``prefix`` (padded with ``<s>`` at the start)."""
        n = self.order - 1
        if n == 0:
            return ()
        tail = tuple(prefix[-n:]) if prefix else ()
        return (self.bos,) * (n - len(tail)) + tail

    def next_log_probs(self, prefix: Sequence[int]) -> np.ndarray:
        """log p(next symbol | prefix) over the characters then ``</s>`` (float64), for symbol ids."""
        context = self.context_ids(prefix)
        out = self._cache.get(context)
        if out is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            out = self._log_probs(context)
            self._cache[context] = out
        return out

    def next_log_probs_after_labels(self, labels: Sequence[int]) -> np.ndarray:
        """:meth:`next_log_probs` after a recogniser's label ids, where id i + 1 is this alphabet's character i
        (the CTC and decoder vocabularies keep id 0 for the blank): the fusion in the CTC and Samba-ASR searches."""
        k = self.order - 1
        return self.next_log_probs([i - 1 for i in labels[max(0, len(labels) - k) :]] if k else [])

    def symbol_log_probs(self, text: str) -> np.ndarray:
        """log p of each symbol of ``text`` and of its ``</s>`` given what precedes it (len(text) + 1 values)."""
        ids = self.encode(text)
        return np.array([self.next_log_probs(ids[:i])[w] for i, w in enumerate([*ids, self.eos])])

    def log_prob(self, text: str, eos: bool = True) -> float:
        """Natural-log probability of ``text`` as a whole sentence (with its ``</s>`` when ``eos``)."""
        ids = self.encode(text)
        total = sum(self.next_log_probs(ids[:i])[w] for i, w in enumerate(ids))
        return float(total + (self.next_log_probs(ids)[self.eos] if eos else 0.0))

    def bits_per_char(self, texts: Iterable[str]) -> float:
        """Cross-entropy in bits per predicted symbol (characters and one ``</s>`` per sentence)."""
        texts = list(texts)
        if not texts:
            raise ValueError("bits_per_char needs at least one text")
        return -sum(self.log_prob(t) for t in texts) / sum(len(t) + 1 for t in texts) / math.log(2)


def _padded_ngrams(sentences: Sequence[Sequence[int]], order: int, bos: int, eos: int) -> np.ndarray:
    """(symbols predicted, order) uint8: for each symbol of each sentence and its ``</s>``, the order-gram ending in
    it, the sentence padded in front with ``order - 1`` ``<s>``."""
    lengths = np.array([len(s) + 1 for s in sentences])  # symbols predicted per sentence
    flat = np.concatenate([np.array([bos] * (order - 1) + [*s, eos], dtype=np.uint8) for s in sentences])
    starts = np.concatenate([[0], np.cumsum(lengths + order - 1)[:-1]])  # each padded sentence in ``flat``
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # symbol's place in its own
    first = np.repeat(starts, lengths) + within  # where in ``flat`` the order-gram predicting that symbol begins
    return np.lib.stride_tricks.sliding_window_view(flat, order)[first]


class CharNGramLM(CharModel):
    """Character n-gram model of ``order`` (>= 1) with interpolated Kneser-Ney, from ``texts``. The default order
    5 is our choice (UNVERIFIED); for the offline CTC recogniser on ``spoken_sentences``, val chose order 10
    (RESULTS.md, Speech, sessions 11 and 12; ``torchssm transcribe --lm``'s default). The counts of each order are
    compressed rows: the sorted distinct contexts as byte strings, the next symbols and their counts (numpy arrays),
    so the grid's three orders of 5M characters of text take 1.5 GB (BENCHMARKS.md, session 32)."""

    def __init__(self, texts: Iterable[str], order: int = 5, alphabet: str = ALPHABET):
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if len(set(alphabet)) != len(alphabet) or not alphabet or len(alphabet) > 254:
            raise ValueError(
                f"alphabet must be 1-254 characters without repeats (symbols are stored as bytes), got {alphabet!r}"
            )
        self.order, self.alphabet = order, alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}
        self.eos = len(alphabet)  # symbol ids: the characters, then </s>
        self.bos = len(alphabet) + 1  # context padding only
        self.n_symbols = len(alphabet) + 1
        sentences = [self.encode(t) for t in texts]
        if not sentences:
            raise ValueError("a language model needs at least one training transcript")
        self.n_sentences, self.n_chars = len(sentences), sum(len(s) for s in sentences)
        # every order-gram of the padded sentences, one row per predicted symbol: (n_chars + n_sentences, order)
        grams = _padded_ngrams(sentences, order, self.bos, self.eos)
        # per order k, the distinct k-grams sorted as byte strings with their counts: raw counts at k = order,
        # continuation counts below (the number of distinct (k + 1)-grams that end in the k-gram)
        levels = {order: np.unique(grams, axis=0, return_counts=True)}
        for k in range(order - 1, 0, -1):
            levels[k] = np.unique(levels[k + 1][0][:, 1:], axis=0, return_counts=True)
        # counts of order k in compressed rows: the sorted distinct contexts (k - 1 symbols, one byte string each),
        # where each context's row starts in the symbols / counts arrays, and those arrays
        self._contexts: list[np.ndarray] = [np.empty(0)] * (order + 1)
        self._row_starts: list[np.ndarray] = [np.empty(0)] * (order + 1)
        self._symbols: list[np.ndarray] = [np.empty(0)] * (order + 1)
        self._counts: list[np.ndarray] = [np.empty(0)] * (order + 1)
        for k, (kgrams, counts) in levels.items():
            contexts = np.ascontiguousarray(kgrams[:, :-1])  # (distinct k-grams, k - 1), sorted: contexts in runs
            new_row = np.ones(len(kgrams), dtype=bool)
            new_row[1:] = (contexts[1:] != contexts[:-1]).any(axis=1)
            starts = np.flatnonzero(new_row)
            self._contexts[k] = contexts[starts].view(f"V{k - 1}").ravel() if k > 1 else np.empty(0)
            self._row_starts[k] = np.append(starts, len(kgrams))
            self._symbols[k], self._counts[k] = kgrams[:, -1].copy(), counts
        self.discounts = [0.0] + [self._discount(self._counts[k]) for k in range(1, order + 1)]
        self._tables: list[dict[tuple[int, ...], tuple[np.ndarray, float, int]]] = [{} for _ in range(order + 1)]
        self._cache = {}

    @staticmethod
    def _discount(counts: np.ndarray) -> float:
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.0
        return d if 0.0 < d <= 1.0 else 0.5

    def _row(self, k: int, context: tuple[int, ...]) -> int | None:
        """The row of an order-k context (k - 1 symbols) in the compressed counts, or None if never seen."""
        if k == 1:
            return 0
        contexts = self._contexts[k]
        key = bytes(context)
        i = int(np.searchsorted(contexts, np.frombuffer(key, dtype=contexts.dtype)[0]))
        return i if i < len(contexts) and contexts[i].tobytes() == key else None

    def encode(self, text: str) -> list[int]:
        """Symbol ids of ``text``; ValueError naming any character outside the alphabet."""
        if not isinstance(text, str):
            raise TypeError(f"a transcript must be a str, got {type(text).__name__}")
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"text {text[:60]!r} has characters outside the alphabet {self.alphabet!r}: {unknown}")
        return [self.index[c] for c in text]

    def _table(self, k: int, context: tuple[int, ...]):
        """(counts over the symbols, their sum, number of nonzero) of an order-k context, or None."""
        table = self._tables[k].get(context)
        if table is None:
            row = self._row(k, context)
            if row is None:
                return None
            first, last = self._row_starts[k][row], self._row_starts[k][row + 1]
            counts = np.zeros(self.n_symbols)
            counts[self._symbols[k][first:last]] = self._counts[k][first:last]
            table = (counts, float(counts.sum()), int(last - first))
            self._tables[k][context] = table
        return table

    def _probs(self, context: tuple[int, ...]) -> np.ndarray:
        """p(. | the last order - 1 symbols of ``context``) over the symbols (float64, sums to 1)."""
        probs = np.full(self.n_symbols, 1.0 / self.n_symbols)
        for k in range(1, self.order + 1):
            table = self._table(k, context[len(context) - (k - 1) :] if k > 1 else ())
            if table is None:  # unseen here, so at every higher order (whose contexts end in it): the lower ones'
                break
            counts, total, types = table
            d = self.discounts[k]
            probs = (np.maximum(counts - d, 0.0) + d * types * probs) / total
        return probs

    def _log_probs(self, context: tuple[int, ...]) -> np.ndarray:
        return np.log(self._probs(context))

    def distribution(self, text: str = "") -> dict[str, float]:
        """{character or ``</s>``: p(it | text)}: the next-symbol distribution after ``text``."""
        probs = self._probs(self.context_ids(self.encode(text)))
        return {**{c: float(probs[i]) for i, c in enumerate(self.alphabet)}, "</s>": float(probs[self.eos])}


class InterpolatedLM(CharModel):
    """``p(w | h) = sum_i weights[i] p_i(w | h)``: the linear interpolation of character ``models`` over one alphabet
    (Jelinek & Mercer 1980; the module docstring), a drop-in for :class:`CharNGramLM` in the searches. ``weights``:
    one per model, >= 0, summing to 1. Its order is the largest of the models'."""

    def __init__(self, models: Sequence[CharNGramLM], weights: Sequence[float]):
        models, weights = list(models), [float(w) for w in weights]
        if not models or len(weights) != len(models):
            raise ValueError(
                f"InterpolatedLM needs one weight per model, got {len(models)} models, {len(weights)} weights"
            )
        if any(m.alphabet != models[0].alphabet for m in models):
            raise ValueError("the interpolated models must share one alphabet")
        if any(not w >= 0.0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
            raise ValueError(f"interpolation weights must be >= 0 and sum to 1, got {weights}")
        self.models, self.weights = models, weights
        with np.errstate(divide="ignore"):
            self.log_weights = np.log(np.array(weights))[:, None]  # (m, 1); log 0 = -inf drops a model
        first = models[0]
        self.order, self.alphabet, self.index = max(m.order for m in models), first.alphabet, first.index
        self.eos, self.bos, self.n_symbols = first.eos, first.bos, first.n_symbols
        self._cache = {}

    def encode(self, text: str) -> list[int]:
        """Symbol ids of ``text`` (:meth:`CharNGramLM.encode`)."""
        return self.models[0].encode(text)

    def _log_probs(self, context: tuple[int, ...]) -> np.ndarray:
        """log of the weighted sum of the models' p(next symbol | context): the padded context is a prefix whose
        last symbols are each model's own (padded) context, as the models share ``<s>``."""
        per_model = np.stack([m.next_log_probs(context) for m in self.models])  # (m, symbols)
        return np.logaddexp.reduce(per_model + self.log_weights, axis=0)


def best_mix_weight(
    in_domain: CharModel, other: CharModel, texts: Sequence[str], weights: Sequence[float] = MIX_WEIGHTS
) -> tuple[float, list[dict]]:
    """The weight lambda of ``weights`` (each in [0, 1]) whose interpolation ``lambda in_domain + (1 - lambda) other``
    has the lowest bits per character on held-out ``texts`` (ties: the larger lambda), and a row {"weight",
    "bits_per_char"} per weight. Each model reads the texts once."""
    texts, weights = list(texts), [float(w) for w in weights]
    if not texts or not weights:
        raise ValueError("best_mix_weight needs held-out texts and at least one weight")
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"mixture weights must lie in [0, 1], got {weights}")
    p_in = np.exp(np.concatenate([in_domain.symbol_log_probs(t) for t in texts]))  # (symbols of all texts,)
    p_other = np.exp(np.concatenate([other.symbol_log_probs(t) for t in texts]))
    rows = [{"weight": w, "bits_per_char": float(-np.log2(w * p_in + (1 - w) * p_other).mean())} for w in weights]
    best = min(rows, key=lambda row: (row["bits_per_char"], -row["weight"]))
    return best["weight"], rows


def interpolated(in_domain: CharNGramLM, other: CharNGramLM, weight: float) -> CharModel:
    """``weight in_domain + (1 - weight) other`` as an :class:`InterpolatedLM`, or ``in_domain`` itself at weight 1."""
    return in_domain if weight == 1.0 else InterpolatedLM([in_domain, other], [weight, 1.0 - weight])


def lm_from_task(task, order: int = 5, extra_texts: Sequence[str] = ()) -> CharNGramLM:
    """The character model of ``order`` (default 5: :class:`CharNGramLM`'s) built from the TRAINING transcripts of
    a transcription task, each distinct transcript once: ``spoken_sentences``' ``voices_per_sentence=k`` repeats
    every sentence k times, which would multiply the counts by k and leave Kneser-Ney no count-1 n-grams to set its
    discounts from."""
    return CharNGramLM(task_lm_sentences(task, extra_texts), order)


def task_lm_sentences(task, extra_texts: Sequence[str] = ()) -> list[str]:
    """:func:`distinct_sentences` of the TRAINING transcripts of a transcription task and ``extra_texts``."""
    return distinct_sentences([task.train[i]["text"] for i in range(len(task.train))], extra_texts)


def distinct_sentences(transcripts: Sequence[str], extra_texts: Sequence[str] = ()) -> list[str]:
    """The text a recogniser's language model learns from: its training ``transcripts`` and ``extra_texts``, each
    distinct sentence once, in first-seen order (the n-gram's counts; the neural LM's corpus,
    :func:`torchssm.audio.neural_lm.write_lm_corpus`)."""
    return list(dict.fromkeys([*transcripts, *extra_texts]))


def checkpoint_lm_sentences(path, data_dir=None, extra_texts: Sequence[str] = ()) -> list[str]:
    """:func:`distinct_sentences` of the recogniser at ``path`` (as :func:`lm_from_checkpoint` counts them)."""
    from torchssm.audio.asr_runs import checkpoint_task

    texts = checkpoint_sentence_texts(path, data_dir)
    if texts is not None:
        return distinct_sentences(texts["train"], extra_texts)
    return task_lm_sentences(checkpoint_task(path, data_dir)[1], extra_texts)


def lm_from_checkpoint(path, order: int = 5, data_dir=None, extra_texts: Sequence[str] = ()) -> CharNGramLM:
    """The character model built from the training transcripts of the task the recogniser at ``path``
    was trained on (its config): for ``spoken_sentences`` from its texts alone
    (:func:`~torchssm.audio.synthetic.sentence_texts`, no audio synthesised); for another task, the task is
    rebuilt from the data cache. ``extra_texts`` (e.g. :func:`read_lm_text`'s) are counted with them, each
    distinct sentence once."""
    return CharNGramLM(checkpoint_lm_sentences(path, data_dir, extra_texts), order)


def checkpoint_sentence_texts(path, data_dir=None, val_heldout: int | None = None) -> dict[str, list[str]] | None:
    """The sentences of the ``spoken_sentences`` task a recogniser at ``path`` was trained on (its saved options;
    :func:`~torchssm.audio.synthetic.sentence_texts`' dict, no audio synthesised), or None for another task;
    ``val_heldout``: with val re-drawn so (:func:`~torchssm.audio.asr_runs.saved_task_config`)."""
    import inspect

    from torchssm.audio.asr_runs import saved_task_config
    from torchssm.audio.synthetic import sentence_texts

    _, task_cfg = saved_task_config(path, val_heldout)
    if task_cfg.get("name") != "spoken_sentences":
        return None
    text_args = set(inspect.signature(sentence_texts).parameters) - {"data_dir"}
    return sentence_texts(data_dir, **{k: v for k, v in task_cfg.items() if k in text_args})


def read_lm_text(path, alphabet: str = ALPHABET) -> list[str]:
    """The sentences of a UTF-8 text file for a language model: one per line, lower-cased with white space runs
    made one space (:func:`~torchssm.audio.text.normalize_transcript`, as LibriSpeech's upper-case transcripts and
    LM corpus are read), empty lines skipped; a line with a character outside ``alphabet``: ValueError naming the
    file, the line and the characters."""
    from pathlib import Path

    from torchssm.audio.text import normalize_transcript

    out = []
    with Path(path).open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = normalize_transcript(raw)
            unknown = sorted(set(line) - set(alphabet))
            if unknown:
                raise ValueError(f"{path}:{number}: characters {unknown} outside the alphabet {alphabet!r}")
            if line:
                out.append(line)
    if not out:
        raise ValueError(f"{path} holds no sentence")
    return out
