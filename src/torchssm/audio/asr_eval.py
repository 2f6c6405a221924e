"""Scoring a speech recogniser's transcripts: decoding a dataset (:func:`transcribe_dataset`), CER and WER with
jiwer (:func:`error_rates`; the CER on held-out words, :func:`~torchssm.audio.ctc.heldout_word_cer`), and where
the errors are: by group (accent, voice family, sentence kind; :func:`error_rates_by`, drawn by
:func:`plot_error_rates_by`), by position in the sentence (:func:`word_hits_by_position`) and, for CTC, by the
share of its frames a transcript needs (:func:`ctc_frame_need`). :func:`transcript_analysis` gathers them for
one decoding (:mod:`torchssm.audio.decoding`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchssm.audio.asr import (
    CTCRecognizer,
    CTCTranscription,
    FrequencyWarped,
    SambaASR,
)
from torchssm.audio.asr_runs import UNNAMED_TASK
from torchssm.audio.batches import collate
from torchssm.audio.ctc import char_error_rate, heldout_word_cer, word_error_rate
from torchssm.audio.text import CharVocabulary


@torch.no_grad()
def transcribe_dataset(
    model: CTCTranscription | SambaASR,
    dataset,
    beam: int = 1,
    batch_size: int = 16,
    limit: int | None = None,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> tuple[list[str], list[str]]:
    """(references, hypotheses) of the first ``limit`` items of ``dataset`` (all: None), in dataset order;
    decoded in batches of similar length, greedily (``beam`` 1) or with a beam, fusing the character
    language model ``lm`` when given (weight ``alpha``, word bonus ``beta``; :mod:`torchssm.audio.lm`)."""
    fusion: dict[str, Any] = {} if lm is None else {"lm": lm, "alpha": alpha, "beta": beta}
    was_training = model.training
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    order = sorted(range(n), key=lambda i: len(dataset[i]["audio"]))
    hyps: list[str] = [""] * n
    try:
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            items = [dataset[i] for i in index]
            batch = collate(items, model.vocab)
            # an autoregressive decoder stops at </s>, or after twice the longest reference of the batch
            longest = max(len(it["text"]) for it in items)
            kwargs = {"max_tokens": 2 * longest + 10} if isinstance(model, SambaASR) else {}
            decoded = model.transcribe(batch["audio"], batch["audio_lengths"], beam=beam, **kwargs, **fusion)
            for i, hyp in zip(index, decoded):
                hyps[i] = hyp
    finally:
        model.train(was_training)
    return [dataset[i]["text"] for i in range(n)], hyps


@torch.no_grad()
def evaluate_asr(
    model: CTCTranscription | SambaASR,
    dataset,
    heldout_words: Sequence[str] = (),
    beam: int = 1,
    batch_size: int = 16,
    limit: int | None = None,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> dict[str, float]:
    """{"cer", "wer", "heldout_cer", "heldout_words_n", "n"} of greedy (beam 1) or beam decoding (with the
    character language model ``lm`` fused when given, :func:`transcribe_dataset`)."""
    refs, hyps = transcribe_dataset(model, dataset, beam, batch_size, limit, lm, alpha, beta)
    out: dict[str, Any] = error_rates(refs, hyps, heldout_words)
    out["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]
    return out


def error_rates(refs: Sequence[str], hyps: Sequence[str], heldout_words: Sequence[str] = ()) -> dict:
    """{"cer", "wer", "n"} of transcripts ``hyps`` against ``refs``, with {"heldout_cer", "heldout_words_n"} (the CER on
    the occurrences of ``heldout_words``, :func:`~torchssm.audio.ctc.heldout_word_cer`) when any are given."""
    out: dict[str, Any] = {"cer": char_error_rate(refs, hyps), "wer": word_error_rate(refs, hyps), "n": len(refs)}
    if heldout_words:
        out["heldout_cer"], out["heldout_words_n"] = heldout_word_cer(refs, hyps, heldout_words)
    return out


def error_rates_by(references: Sequence[str], hypotheses: Sequence[str], groups: Sequence[str]) -> dict:
    """{group: {"cer", "wer", "n"}}: the corpus error rates of the utterances of each group."""
    if not len(references) == len(hypotheses) == len(groups):
        raise ValueError(f"{len(references)} references, {len(hypotheses)} hypotheses, {len(groups)} groups")
    out = {}
    for g in sorted(set(groups)):
        refs = [r for r, k in zip(references, groups) if k == g]
        hyps = [h for h, k in zip(hypotheses, groups) if k == g]
        out[g] = {"cer": char_error_rate(refs, hyps), "wer": word_error_rate(refs, hyps), "n": len(refs)}
    return out


def plot_error_rates_by(
    path, settings: dict, metric: str = "cer", group_names: dict | None = None, ylabel: str | None = None
) -> dict:
    """A bar chart of :func:`error_rates_by` results side by side: ``settings`` {label: {group: {"cer", "wer", "n"}}}
    (e.g. one recogniser or ensemble per label, the test accents as groups), one cluster of bars per group with one
    bar per setting, in percent; every setting must have the same groups. ``group_names`` relabels the groups on the
    axis (e.g. {"en-us-nyc": "New York"}). Returns {"path", "values": {label: {group: percent}}}."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    if metric not in ("cer", "wer"):
        raise ValueError(f"metric must be 'cer' or 'wer', got {metric!r}")
    if not settings:
        raise ValueError("plot_error_rates_by needs at least one setting ({label: error_rates_by(...)})")
    groups = list(next(iter(settings.values())))
    for label, rates in settings.items():
        if list(rates) != groups:
            raise ValueError(f"setting {label!r} has groups {list(rates)}; expected the first setting's {groups}")
    values = {label: {g: 100.0 * float(rates[g][metric]) for g in groups} for label, rates in settings.items()}
    fig, (ax,) = new_figure(size=(3.6 + 1.4 * len(groups), 3.6))  # room on the right for the legend
    width = 0.8 / len(values)
    for i, (label, by_group) in enumerate(values.items()):
        xs = [k + (i - (len(values) - 1) / 2) * width for k in range(len(groups))]
        bars = ax.bar(xs, list(by_group.values()), width, color=f"C{i % 10}", label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), [(group_names or {}).get(g, g) for g in groups])
    ax.set_ylabel(ylabel or f"{metric.upper()} (%)")
    ax.set_ylim(0, 1.1 * max([v for by_group in values.values() for v in by_group.values()] + [1e-9]))
    ax.grid(axis="y", alpha=0.3)
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return {"path": save_figure(fig, path), "values": values}


def word_hits_by_position(references: Sequence[str], hypotheses: Sequence[str], bins: int = 3) -> list[float]:
    """Fraction of reference words recognised exactly (a hit in jiwer's word alignment) in each of ``bins``
    equal parts of the sentences (word k of n falls in part ``k * bins // n``): where in an utterance a
    recogniser loses the audio."""
    if bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    import jiwer

    output = jiwer.process_words(list(references), [h if h.strip() else "" for h in hypotheses])
    hits, totals = [0] * bins, [0] * bins
    for ref, chunks in zip(output.references, output.alignments):
        for chunk in chunks:
            for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                part = k * bins // len(ref)
                totals[part] += 1
                hits[part] += chunk.type == "equal"
    return [h / t if t else float("nan") for h, t in zip(hits, totals)]


def ctc_frame_need(dataset, subsampling: int = 4, speed: float = 1.0, vocab: CharVocabulary | None = None):
    """Per utterance of ``dataset``: CTC's fewest frames for its transcript (:func:`torchssm.audio.ctc.
    min_frames`) / the encoder frames of its audio played at ``speed`` (``subsampling`` 4: 40 ms frames, 2:
    20 ms); a numpy array, over 1 where the transcript cannot be aligned at all (``F.ctc_loss`` gives inf,
    zeroed by ``zero_infinity``: the utterance teaches nothing)."""
    from torchssm.audio.asr import encoder_frames
    from torchssm.audio.ctc import min_frames
    from torchssm.audio.dsp import speed_perturbed_length

    vocab = vocab or CharVocabulary()
    n = len(dataset)
    samples = torch.tensor([speed_perturbed_length(len(dataset[i]["audio"]), speed) for i in range(n)])
    frames = encoder_frames(samples, subsampling).numpy()
    need = np.array([min_frames(vocab.encode(dataset[i]["text"])) for i in range(n)])
    return need / np.maximum(frames, 1)


def transcript_analysis(task, task_cfg: dict, ctc, transcripts: dict) -> dict:
    """:func:`~torchssm.audio.decoding.analyse_recognizer`'s breakdowns of the (references, hypotheses) of each
    split in ``transcripts`` ({"train" (its first items), "val", "test"}; test required) of ``task`` (``task_cfg``:
    the run's saved task section; ``ctc``: the recogniser, or an ensemble's first member, whose frame rate buckets
    the CER by frame need when it is a :class:`~torchssm.audio.asr.CTCRecognizer`, warped or not)."""
    out: dict = {}
    for split, (refs, hyps) in transcripts.items():
        out[split] = error_rates(refs, hyps)
        if isinstance(ctc, (CTCRecognizer, FrequencyWarped)) and split != "val":  # CER by the frames CTC needs
            dataset = getattr(task, split)
            need = ctc_frame_need([dataset[i] for i in range(len(refs))], ctc.cfg.subsampling, vocab=ctc.vocab)
            out[f"{split}_by_frame_need"] = error_rates_by(refs, hyps, [_need_bucket(r) for r in need])
    refs, hyps = transcripts["test"]
    out["test_word_hits_by_third"] = word_hits_by_position(refs, hyps, 3)
    out["test_transcripts"] = [{"ref": r, "hyp": h} for r, h in zip(refs, hyps)]
    heldout = task.extra.get("heldout_words", [])
    seen = set(task.extra.get("train_vocabulary", []))
    out["test"]["heldout_cer"], out["test"]["heldout_words_n"] = heldout_word_cer(refs, hyps, heldout)
    out["test"]["seen_word_cer"], out["test"]["seen_words_n"] = heldout_word_cer(refs, hyps, seen)
    return out | breakdowns_of_test(task_cfg, refs, hyps, heldout)


def breakdowns_of_test(task_cfg: dict, refs: Sequence[str], hyps: Sequence[str], heldout: Sequence[str] = ()) -> dict:
    """Test CER / WER by sentence (with a held-out word or not) and, for ``spoken_sentences`` (``task_cfg``: the
    run's saved task section), by voice family, accent and heard / unheard variant (:func:`error_rates_by`)."""
    from torchssm.audio import synthetic

    out = {}
    if heldout:
        held = set(heldout)
        kinds = ["with a held-out word" if held & set(r.split()) else "seen words only" for r in refs]
        out["test_by_sentence"] = error_rates_by(refs, hyps, kinds)
    if task_cfg.get("name", UNNAMED_TASK) == "spoken_sentences":
        seed, split_kind = int(task_cfg.get("seed", 0)), str(task_cfg.get("voice_split", "families"))
        voices = [synthetic.item_voice("test", i, seed, split_kind) for i in range(len(refs))]
        out["test_by_family"] = error_rates_by(refs, hyps, [synthetic.voice_family(v) for v in voices])
        out["test_by_accent"] = error_rates_by(refs, hyps, [v.partition("+")[0] for v in voices])
        if split_kind == "speakers":  # the variants no training voice has
            unheard = [synthetic.is_test_only_voice(v) for v in voices]
            out["test_by_variant_heard"] = error_rates_by(
                refs, hyps, ["unheard variant" if u else "heard variant" for u in unheard]
            )
    return out


def _need_bucket(ratio: float) -> str:
    """The bucket of a :func:`ctc_frame_need` ratio in :func:`~torchssm.audio.decoding.analyse_recognizer`."""
    for edge, name in ((0.6, "< 0.6"), (0.7, "0.6-0.7"), (0.8, "0.7-0.8"), (0.9, "0.8-0.9"), (1.0, "0.9-1")):
        if ratio < edge:
            return name
    return "> 1 (cannot align)" if ratio > 1 else "0.9-1"


def format_rates(m: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items() if k != "examples")
