"""A neural character language model that rescores a CTC recogniser's n-best lists.

The prefix beam search of :mod:`torchssm.audio.ctc` fuses a character n-gram (:mod:`torchssm.audio.lm`) while it
searches. A neural language model is too slow to query at every prefix, so it rescores the search's n-best list
instead, as speech recognisers have done since recurrent LMs (Mikolov et al. 2010 rescored n-best lists of a
recogniser with an RNN LM; section UNVERIFIED):

    score(y) = search score(y) + w * log p_nlm(y)          the best of the list by score, per utterance

where the search score is ``log p_ctc(y | x) + alpha log p_ngram(y) + beta |W|`` (:func:`~torchssm.audio.ctc.
prefix_beam_search`) and w is chosen on val (:data:`NEURAL_LM_WEIGHTS`, 0: the search alone), by
:func:`~torchssm.audio.decoding.tuned_decoding` (``speech decode --rescore-lm``). The selection is
:func:`~torchssm.audio.asr.best_rescored`'s, the one attention rescoring uses with a decoder.

The model is the library's byte-level causal LM (:class:`~torchssm.models.lm.CausalLM`, Mamba's LM architecture),
trained by ``torchssm train`` on the ``lm_text`` task (preset ``audio/rescoring_lm``) over the text the n-gram
counts: the recogniser's distinct training transcripts and the ``--lm-text`` sentences
(:func:`~torchssm.audio.lm.distinct_sentences`), written one per line into shards by :func:`write_lm_corpus`
(``torchssm speech lm-corpus``; ``lm_text`` splits by file, so its val and test are shards of the same text). A
newline stands for the sentence boundary, so a hypothesis y is scored as log p(y "\\n" | "\\n"), summed over its
bytes in nats (:func:`sentence_log_probs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the weights of the neural LM tried on val (0: the search alone); our grid, fixed before its first use (session 28)
NEURAL_LM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)
SHARD_NAME = "lm-corpus-{:03d}.txt"
BOUNDARY = "\n"  # the sentence boundary of the corpus, the context a hypothesis is scored in


def write_lm_corpus(sentences: Sequence[str], out_dir, shards: int = 20, seed: int = 0) -> list[Path]:
    """Write ``sentences`` (one per line) in a seeded random order into ``shards`` files ``lm-corpus-NNN.txt`` of
    ``out_dir``, sentence k of the order in shard k mod ``shards``; each file written atomically. Returns the paths.
    ValueError for fewer than 3 shards (``lm_text`` needs a train, a val and a test file), fewer sentences than
    shards, or shard files already in ``out_dir``."""
    from torchssm.fileio import atomic_write_text

    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 3:
        raise ValueError(f"shards must be an int >= 3 (lm_text splits train / val / test by file), got {shards!r}")
    if len(sentences) < shards:
        raise ValueError(f"{len(sentences)} sentences cannot fill {shards} shards")
    out_dir = Path(out_dir)
    existing = sorted(out_dir.glob("lm-corpus-*.txt")) if out_dir.is_dir() else []
    if existing:
        raise ValueError(f"{out_dir} already holds a corpus ({existing[0].name}, ...): choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(sentences))
    paths = []
    for k in range(shards):
        lines = [sentences[i] + BOUNDARY for i in order[k::shards]]
        paths.append(atomic_write_text(out_dir / SHARD_NAME.format(k), "".join(lines)))
    return paths


def load_rescoring_lm(path) -> nn.Module:
    """The byte-level causal language model saved at ``path`` (a checkpoint or run directory of ``torchssm train``
    on ``lm_text``, or a ``save_pretrained`` directory), in eval mode; ValueError for another model or vocabulary."""
    from torchssm import from_pretrained
    from torchssm.models.lm import CausalLM
    from torchssm.models.pretrained import CONFIG_NAME

    path = Path(path)
    for sub in ("best", "last"):  # a run directory: its best checkpoint (torchssm train's best/)
        if (path / sub).is_dir():
            path = path / sub
            break
    if not (path / CONFIG_NAME).is_file():
        raise ValueError(f"{path} is not a saved language model (no {CONFIG_NAME}); rescoring needs a causal LM")
    model = from_pretrained(path)
    if not isinstance(model, CausalLM):
        raise ValueError(f"{path} holds a {type(model).__name__}; rescoring needs a causal language model (lm_text)")
    if model.config.vocab_size != 256:
        raise ValueError(
            f"{path} has a vocabulary of {model.config.vocab_size} tokens; rescoring reads characters as bytes (256)"
        )
    return model.eval()


@torch.no_grad()
def sentence_log_probs(model: nn.Module, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(n,) float64: log p(text "\\n" | "\\n") in nats of each of ``texts`` under the byte-level causal LM ``model``
    (the sum of its next-byte log-probabilities), in the order given. Texts of similar length share a batch,
    right-padded; a causal model's scores do not depend on the padding after them."""
    encoded = [(BOUNDARY + t + BOUNDARY).encode("utf-8") for t in texts]
    out = torch.zeros(len(encoded), dtype=torch.float64)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in index)
        ids = torch.zeros(len(index), longest, dtype=torch.long)  # (b, l) bytes, right-padded
        for row, i in enumerate(index):
            ids[row, : len(encoded[i])] = torch.tensor(list(encoded[i]))
        logits = model(ids[:, :-1])[..., :256]  # (b, l - 1, 256): the next byte's scores
        picked = F.log_softmax(logits.double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (b, l - 1)
        lengths = torch.tensor([len(encoded[i]) - 1 for i in index])
        valid = torch.arange(longest - 1)[None, :] < lengths[:, None]
        out[index] = (picked * valid).sum(-1)
    return out


def lm_scored_lists(model: nn.Module, lists: Sequence[Sequence], vocab) -> list[list[tuple[list[int], float, float]]]:
    """Per n-best list of ``lists`` ([(labelling, search score)], :meth:`~torchssm.audio.decoding.LoadedRuns.
    scored_nbest`): [(labelling, search score, log p_nlm)] with each transcript's :func:`sentence_log_probs` under
    ``model`` (``vocab`` reads the labellings), the entries :func:`~torchssm.audio.asr.best_rescored` ranks."""
    flat = [(list(y), float(score)) for items in lists for y, score in items]
    log_probs = sentence_log_probs(model, [vocab.decode(y) for y, _ in flat]).tolist()
    entries = [(y, score, lp) for (y, score), lp in zip(flat, log_probs)]
    out, start = [], 0
    for items in lists:
        out.append(entries[start : start + len(items)])
        start += len(items)
    return out


@torch.no_grad()
def rescore_with_lm(
    recognizer,
    audio: torch.Tensor,
    audio_lengths: torch.Tensor,
    model: nn.Module,
    weight: float,
    beam: int = 16,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> list[str]:
    """Transcripts of a batch of audio (b, n) by a CTC ``recognizer`` (a :class:`~torchssm.audio.asr.CTCRecognizer`
    or :class:`~torchssm.audio.asr.CTCEnsemble`): per utterance the ``beam`` best of the prefix beam search (``lm``
    fused with ``alpha`` / ``beta``), the best by search score + ``weight`` x log p_nlm under the byte-level LM
    ``model`` (``transcribe --rescore-lm``; weight 0: the search's own transcript)."""
    from torchssm.audio.asr import rescored_transcripts, scored_nbest_of

    if weight < 0:
        raise ValueError(f"the neural LM's weight must be >= 0 (0: the search alone), got {weight}")
    vocab = recognizer.vocab
    log_probs = recognizer(audio, audio_lengths)  # (b, t', n_ctc)
    frames = recognizer.frame_lengths(audio_lengths).tolist()

    def lm_log_probs(i: int, labellings: list) -> torch.Tensor:  # the second score of attention rescoring's lists
        return sentence_log_probs(model, [vocab.decode(y) for y in labellings])

    lists = scored_nbest_of(log_probs, frames, beam, lm, alpha, beta, lm_log_probs)
    return rescored_transcripts(lists, vocab, weight)
