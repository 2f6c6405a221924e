"""The decoding of record of speech recognisers (``torchssm speech decode``): a CTC recogniser, or an ensemble
of them (:class:`~torchssm.audio.asr.CTCEnsemble`, frame posteriors combined), decoded by prefix beam search
with a character language model (:mod:`torchssm.audio.lm`) built from its training transcripts. The model's
order, weight and word bonus (and an ensemble's combine rule, and the beam width) are chosen on val
(:func:`lm_grid`, :func:`tuned_decoding`) and test is decoded once; a hybrid Samba-ASR run's decoder then
rescores the n-best lists (:func:`rescoring_decoding`). :class:`LoadedRuns` loads the runs once and encodes each
split once per member for all of it. :func:`evaluate_checkpoint` and :func:`analyse_recognizer` decode at a
given setting."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from torchssm.audio.asr import (
    AttentionRescoring,
    CTCEnsemble,
    CTCRecognizer,
    CTCTranscription,
    FrequencyWarped,
    SambaASR,
    SambaCTCHead,
    can_rescore,
    check_warps,
    is_hybrid,
    rescored_transcripts,
)
from torchssm.audio.asr_eval import (
    breakdowns_of_test,
    error_rates,
    evaluate_asr,
    format_rates,
    transcribe_dataset,
    transcript_analysis,
)
from torchssm.audio.asr_runs import load_for_decoding, recognizer_kind, run_paths, saved_task_config
from torchssm.audio.batches import collate
from torchssm.audio.ctc import char_error_rate, oracle_transcripts, word_error_rate
from torchssm.audio.lm import GRID_ALPHAS, GRID_BEAM, GRID_BETAS, GRID_ORDERS
from torchssm.audio.mbr import check_scale, list_distances, mbr_transcripts
from torchssm.audio.neural_lm import NEURAL_LM_WEIGHTS, lm_scored_lists, load_rescoring_lm
from torchssm.audio.progress import progress
from torchssm.audio.text import CharVocabulary

# the decoder weights of attention rescoring tried on val (:func:`rescoring_decoding`; 0: the CTC search alone):
# our grid, fixed before its first use (session 24)
DECODER_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


@torch.no_grad()
def ctc_emissions(model: CTCTranscription, dataset, batch_size: int = 8) -> list[torch.Tensor]:
    """Per item of ``dataset``: the CTC model's log-probabilities over its own frames (t_i, n_ctc)."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        starts = range(0, len(dataset), batch_size)
        for start in progress(starts, len(starts), f"encoding {len(dataset)} utterances"):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collate(items, model.vocab)
            log_probs = model(batch["audio"], batch["audio_lengths"])
            frames = model.frame_lengths(batch["audio_lengths"]).tolist()
            out += [log_probs[j, : frames[j]].clone() for j in range(len(items))]
    finally:
        model.train(was_training)
    return out


def lm_grid(
    path,
    orders: Sequence[int] = (3, 4, 6, 8, 10),
    alphas: Sequence[float] = (0.3, 0.6, 1.0, 1.5),
    betas: Sequence[float] = (0.0, 1.0, 2.0, 3.0),
    beam: int = 8,
    split: str = "val",
    data_dir=None,
    log=print,
    extra_texts: Sequence[str] = (),
    combine: str = "prob",
    workers: int = 1,
    val_heldout: int | None = None,
) -> dict:
    """Shallow-fusion settings of the CTC recogniser at ``path`` (or of the ensemble of a list of them, with
    ``combine``, :func:`load_for_decoding`; or of the CTC head of a hybrid Samba-ASR run) tried on one split (tune
    on ``val``): for every (order, alpha, beta), the CER / WER of the prefix beam search (``beam``) with the character
    language model of that order built from the run's TRAINING transcripts (:mod:`torchssm.audio.lm`);
    also the same beam without the model. Returns {"rows", "best" (lowest CER, then WER), "best_transcripts", "no_lm",
    "cpu_s"}; the emissions are computed once; ``extra_texts``: more sentences for the language model
    (:func:`~torchssm.audio.lm.lm_from_task`). The default grid is session 11's (RESULTS.md, Speech); session 12's
    larger one, at beam 8 and 16, is :mod:`~torchssm.audio.lm`'s ``GRID_ORDERS`` / ``GRID_ALPHAS`` / ``GRID_BETAS``
    (:func:`tuned_decoding`'s). ``workers`` > 1: each order's settings shared among that many forked processes
    (:func:`grid_transcripts`; the same rows; "cpu_s" counts theirs too). ``val_heldout``: val re-drawn with that
    many sentences of held-out words (:class:`LoadedRuns`)."""
    if split not in ("val", "test", "train"):
        raise ValueError(f"split must be val, test or train, got {split!r}")
    _check_workers(workers)
    cpu0 = _cpu_with_children()
    loaded = LoadedRuns(path, data_dir, extra_texts, val_heldout=val_heldout)
    out = loaded.grid(split, combine, orders, alphas, betas, beam, log, workers)
    return out | {"cpu_s": _cpu_with_children() - cpu0}


class LoadedRuns:
    """The run(s) of one decoding loaded once (:func:`load_for_decoding`): ``ckpt`` (the first's checkpoint
    directory), ``task`` (rebuilt from the data cache), ``members`` (CTC recognisers; a hybrid Samba-ASR run by its
    CTC head, :class:`~torchssm.audio.asr.SambaCTCHead`; with ``warps``, each recogniser at each warp,
    :class:`~torchssm.audio.asr.FrequencyWarped`) and ``model`` (the recogniser, or the
    :class:`~torchssm.audio.asr.CTCEnsemble` of several). Each member's emissions on a split are computed once
    (:func:`ctc_emissions`) and combined under either rule on demand (:meth:`emissions`), as are the language models
    (:meth:`lm`): the val grids of both rules, the beams and the test decoding of :func:`tuned_decoding` share them.
    ``val_heldout``: the task's val re-drawn with that many sentences of held-out words
    (:func:`~torchssm.audio.asr_runs.saved_task_config`; None: the run's own). ``mix_texts``: text of another domain
    whose model each language model is interpolated with (:meth:`lm`)."""

    def __init__(
        self,
        path,
        data_dir=None,
        extra_texts: Sequence[str] = (),
        warps: Sequence[float] = (1.0,),
        val_heldout: int | None = None,
        mix_texts: Sequence[str] = (),
    ):
        self.ckpt, self.task, self.model = load_for_decoding(path, data_dir, warps=warps, val_heldout=val_heldout)
        model = self.model
        self.members: list[CTCRecognizer | SambaCTCHead | FrequencyWarped] = []
        for m in list(model.members) if isinstance(model, CTCEnsemble) else [model]:
            m = SambaCTCHead(m) if is_hybrid(m) else m
            if not isinstance(m, (CTCRecognizer, SambaCTCHead, FrequencyWarped)):
                raise ValueError(
                    f"decoding with a language-model grid needs a CTC recogniser (or a Samba-ASR one with a CTC "
                    f"head), got {type(m).__name__} at {self.ckpt}"
                )
            self.members.append(m)
        self.vocab: CharVocabulary = self.members[0].vocab
        self.extra_texts, self.mix_texts = list(extra_texts), list(mix_texts)
        self.mix: dict[int, dict] = {}  # order -> {"weight", "rows"}: the interpolation chosen on val (mix_texts)
        self._member_emissions: dict[str, list[list[torch.Tensor]]] = {}  # split -> per member, per item (t_i, n_ctc)
        self._lms: dict[int, Any] = {}  # order -> CharNGramLM (InterpolatedLM with mix_texts)

    def dataset(self, split: str):
        dataset = getattr(self.task, split)
        if dataset is None or len(dataset) == 0:
            raise ValueError(f"the task of {self.ckpt} has no {split} split")
        return dataset

    def references(self, split: str) -> list[str]:
        dataset = self.dataset(split)
        return [dataset[i]["text"] for i in range(len(dataset))]

    def emissions(self, split: str, combine: str = "prob") -> list[torch.Tensor]:
        """Per item of ``split``: the (t_i, n_ctc) log-probabilities of the recogniser, or of the ensemble under
        ``combine`` (:func:`~torchssm.audio.ctc.combine_emissions` of its members', each member's computed once)."""
        from torchssm.audio.ctc import check_combine, combine_emissions

        check_combine(combine)
        if split not in self._member_emissions:
            self._member_emissions[split] = [ctc_emissions(m, self.dataset(split)) for m in self.members]
        per_member = self._member_emissions[split]
        if len(per_member) == 1:
            return per_member[0]
        return [combine_emissions(list(items), combine) for items in zip(*per_member)]

    def lm(self, order: int):
        """The character language model of ``order`` from the training transcripts and ``extra_texts`` (None for 0);
        with ``mix_texts``, interpolated with a model of those at the weight that gives val's transcripts the fewest
        bits per character (:func:`~torchssm.audio.lm.best_mix_weight`, recorded in ``mix``)."""
        from torchssm.audio.lm import CharModel, CharNGramLM, best_mix_weight, interpolated, lm_from_task

        if not order:
            return None
        if order not in self._lms:
            ngram = lm_from_task(self.task, order, self.extra_texts)
            lm: CharModel = ngram
            if self.mix_texts:
                other = CharNGramLM(self.mix_texts, order)
                weight, rows = best_mix_weight(ngram, other, self.references("val"))
                self.mix[order] = {"weight": weight, "rows": rows}
                lm = interpolated(ngram, other, weight)
            self._lms[order] = lm
        return self._lms[order]

    def decoding_model(self, combine: str = "prob"):
        """The recogniser to decode audio with: the run's own model, or the ensemble of the members under ``combine``
        (the same modules)."""
        if isinstance(self.model, CTCEnsemble):
            return CTCEnsemble(list(self.model.members), combine).eval()
        return self.model

    def grid(
        self,
        split: str,
        combine: str,
        orders: Sequence[int],
        alphas: Sequence[float],
        betas: Sequence[float],
        beam: int,
        log=print,
        workers: int = 1,
    ) -> dict:
        """:func:`lm_grid`'s {"split", "beam", "no_lm", "rows", "best"} on these emissions, with "best_transcripts"
        (those of the best row, for its caller to reuse instead of decoding them again)."""
        emissions, refs = self.emissions(split, combine), self.references(split)

        def rates(hyps: list[str]) -> dict:
            return {"cer": char_error_rate(refs, hyps), "wer": word_error_rate(refs, hyps)}

        (plain,) = grid_transcripts(emissions, self.vocab, beam, None, [(0.0, 0.0)])
        out: dict[str, Any] = {"split": split, "beam": beam, "no_lm": rates(plain), "rows": []}
        log(f"{split}, beam {beam}, no language model: {format_rates(out['no_lm'])}")
        transcripts = []  # per row
        for order in orders:
            lm = self.lm(order)
            bits = lm.bits_per_char(refs)
            settings = [(alpha, beta) for alpha in alphas for beta in betas]
            grid = grid_transcripts(emissions, self.vocab, beam, lm, settings, workers)
            for (alpha, beta), hyps in zip(settings, grid):
                row = {"order": order, "alpha": alpha, "beta": beta, **rates(hyps), "bits_per_char": bits}
                out["rows"].append(row)
                transcripts.append(hyps)
                log(format_rates(row))
        best = min(range(len(out["rows"])), key=lambda i: (out["rows"][i]["cer"], out["rows"][i]["wer"]), default=None)
        out["best"] = None if best is None else out["rows"][best]
        out["best_transcripts"] = None if best is None else transcripts[best]
        return out

    def scored_nbest(self, split: str, combine: str, setting: dict) -> list[list[tuple[tuple[int, ...], float]]]:
        """Per item of ``split``: the prefix beam search's n-best at ``setting`` ({"beam", "lm_order", "alpha",
        "beta"}), [(labelling, search score)] best first (the first is the decoding's transcript)."""
        from torchssm.audio.ctc import prefix_beam_search

        lm = self.lm(int(setting["lm_order"]))
        beam, alpha, beta = int(setting["beam"]), float(setting["alpha"]), float(setting["beta"])
        emissions = self.emissions(split, combine)
        return [
            prefix_beam_search(e, beam, lm=lm, alpha=alpha, beta=beta)
            for e in progress(emissions, len(emissions), f"{split}, beam {beam}")
        ]

    def greedy(self, split: str, combine: str = "prob") -> list[str]:
        """Per item of ``split``: the greedy CTC transcript (best path, collapsed)."""
        from torchssm.audio.ctc import greedy_decode

        return [self.vocab.decode(greedy_decode(e)) for e in self.emissions(split, combine)]


_GRID_INPUTS: tuple | None = None  # (emissions, vocab, beam, lm) of grid_transcripts: forked workers inherit it


def _grid_setting(setting: tuple[float, float]) -> list[str]:
    from torchssm.audio.ctc import prefix_beam_search

    assert _GRID_INPUTS is not None, "grid_transcripts sets the inputs"
    emissions, vocab, beam, lm = _GRID_INPUTS
    alpha, beta = setting
    return [vocab.decode(prefix_beam_search(e, beam, lm=lm, alpha=alpha, beta=beta)[0][0]) for e in emissions]


def grid_transcripts(
    emissions: Sequence[torch.Tensor], vocab: CharVocabulary, beam: int, lm, settings: Sequence, workers: int = 1
) -> list[list[str]]:
    """Per (alpha, beta) of ``settings``: the best transcript of the prefix beam search (``beam``, ``lm`` fused with
    that weight and word bonus) of each of ``emissions`` ((t_i, n_ctc) log-probabilities). ``workers`` > 1: the
    settings shared among that many processes forked from this one (they inherit the inputs; nothing is pickled
    but the settings and the transcripts), the same transcripts in the same order; the fork start method (Linux)."""
    global _GRID_INPUTS
    _check_workers(workers)
    n = min(workers, len(settings))
    if n > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError("workers > 1 needs the fork start method (Linux); use workers=1")
    _GRID_INPUTS = (emissions, vocab, beam, lm)
    desc = f"beam {beam}, {'no LM' if lm is None else f'LM order {lm.order}'}: settings"
    try:
        if n <= 1:
            return [_grid_setting(setting) for setting in progress(settings, len(settings), desc)]
        with multiprocessing.get_context("fork").Pool(n) as pool:
            results = pool.imap(_grid_setting, list(settings), chunksize=1)  # in order
            return list(progress(results, len(settings), desc))
    finally:
        _GRID_INPUTS = None


def _check_workers(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1 (processes for the language-model grid), got {workers!r}")


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its finished children (the grid's workers; this process alone where the
    ``resource`` module is missing, as on Windows)."""
    try:
        import resource
    except ImportError:
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def evaluate_checkpoint(
    path,
    split: str = "test",
    beam: int = 1,
    lm_order: int = 0,
    alpha: float = 0.0,
    beta: float = 0.0,
    data_dir=None,
    extra_texts: Sequence[str] = (),
    combine: str = "prob",
    warps: Sequence[float] = (1.0,),
    val_heldout: int | None = None,
) -> dict:
    """:func:`evaluate_asr` of the recogniser at ``path`` (or the ensemble of a list of CTC ones, or of their
    test-time ``warps``, :func:`load_for_decoding`) on a split of its task, with a character language model of
    ``lm_order`` (0: none) from the run's training transcripts (and ``extra_texts``) fused; ``val_heldout``: val
    re-drawn with that many sentences of held-out words."""
    from torchssm.audio.lm import lm_from_task

    if split not in ("val", "test", "train"):
        raise ValueError(f"split must be val, test or train, got {split!r}")
    cpu0 = time.process_time()
    _, task, model = load_for_decoding(path, data_dir, combine, warps, val_heldout)
    lm = lm_from_task(task, lm_order, extra_texts) if lm_order else None
    out = evaluate_asr(
        model, getattr(task, split), task.extra.get("heldout_words", []), beam, lm=lm, alpha=alpha, beta=beta
    )
    out["cpu_s"] = time.process_time() - cpu0
    return out


def analyse_recognizer(
    path,
    beam: int = 1,
    n_train: int = 200,
    data_dir=None,
    lm_order: int = 0,
    alpha: float = 0.0,
    beta: float = 0.0,
    extra_texts: Sequence[str] = (),
    combine: str = "prob",
    val_heldout: int | None = None,
) -> dict:
    """Where the errors of the recogniser saved at ``path`` (or of the ensemble of a list of CTC ones,
    :func:`load_for_decoding`) are, decoded as :func:`evaluate_checkpoint` decodes (``beam``, and the
    character language model of ``lm_order`` from the training transcripts and ``extra_texts`` fused with
    ``alpha``, ``beta``), on the task of its config (rebuilt from the cache): CER / WER on the first
    ``n_train`` training utterances (no augmentation), val and test; on test, by voice family
    (:func:`torchssm.audio.synthetic.item_voice` of each utterance, ``spoken_sentences`` only) and by
    accent, by sentence (with a held-out word or not), the CER on held-out words and, for comparison, on
    the test words that do occur in training (both per word, aligned by jiwer's word alignment, so a lost
    word boundary counts against both), the test words recognised in each third of the sentences
    (:func:`~torchssm.audio.asr_eval.word_hits_by_position`), every test transcript ("test_transcripts": [{"ref",
    "hyp"}], for paired comparisons, :func:`~torchssm.audio.ctc.paired_cer_difference`) and, for CTC models, train
    and test CER by the share of its frames an utterance's transcript needs
    (:func:`~torchssm.audio.asr_eval.ctc_frame_need`, at the model's frame rate). ``val_heldout``: val re-drawn with
    that many sentences of held-out words."""
    from torchssm.audio.lm import lm_from_task

    _, task_cfg = saved_task_config(run_paths(path)[0], val_heldout)
    _, task, model = load_for_decoding(path, data_dir, combine, val_heldout=val_heldout)
    lm = lm_from_task(task, lm_order, extra_texts) if lm_order else None
    ctc = model.members[0] if isinstance(model, CTCEnsemble) else model  # its frame rate is the ensemble's
    transcripts = {}
    for split, dataset, limit in (("train", task.train, n_train), ("val", task.val, None), ("test", task.test, None)):
        if dataset is None or (limit is not None and limit < 1):
            continue
        transcripts[split] = transcribe_dataset(model, dataset, beam=beam, limit=limit, lm=lm, alpha=alpha, beta=beta)
    setting = {"beam": beam, "lm_order": lm_order, "alpha": alpha, "beta": beta}
    return setting | transcript_analysis(task, task_cfg, ctc, transcripts)


def tuned_decoding(
    path,
    extra_texts: Sequence[str] = (),
    orders: Sequence[int] = GRID_ORDERS,
    alphas: Sequence[float] = GRID_ALPHAS,
    betas: Sequence[float] = GRID_BETAS,
    beam: int = GRID_BEAM,
    data_dir=None,
    log=print,
    log_rows: bool = False,
    decoder_weights: Sequence[float] = DECODER_WEIGHTS,
    workers: int = 1,
    beams: Sequence[int] = (),
    rescore_lm=None,
    lm_weights: Sequence[float] = NEURAL_LM_WEIGHTS,
    warps: Sequence[float] = (1.0,),
    val_heldout: int | None = None,
    mbr_scales: Sequence[float] = (),
    mix_texts: Sequence[str] = (),
) -> dict:
    """The decoding of record of a CTC recogniser (or of the ensemble of a list of them) with its language model
    tuned on val and test decoded once: :func:`lm_grid` on val for every (order, alpha, beta) of the grid at
    ``beam``, for an ensemble under both combine rules ("prob", "logprob"); the lowest val CER (then WER) chooses
    the rule and the setting; with ``beams`` (more widths), val is decoded at that setting with ``beam`` and each of
    them and the lowest CER (then WER, then the narrower beam) chooses the width ("beam_rows"); with them test is
    decoded once, broken down by :func:`transcript_analysis` (by accent, voice family, held-out words, ...), read
    greedily ("test_greedy") and for its n-best oracle ("test_oracle": per utterance the list's transcript closest
    to the reference, the floor of any rescoring of the lists). Returns {"runs", "val": {rule: {"best", "no_lm",
    "cpu_s"}}, "chosen_rule", "setting", "beam_rows", "test", "test_greedy", "test_oracle", "analysis",
    "test_transcripts", "val_transcripts" (at the chosen setting, as "analysis" reads val), "cpu_s"}. Each
    checkpoint is loaded once and each member encodes val and test once (:class:`LoadedRuns`). ``extra_texts``: more
    language-model text (e.g. :func:`~torchssm.audio.prose.language_model_text`'s). ``log`` gets a line per stage,
    and with ``log_rows`` one per setting of the grid. ``workers`` > 1: the grid's settings shared among forked
    processes (:func:`grid_transcripts`; the same choice and result, less wall time where cores are free).

    A hybrid Samba-ASR run (``model.ctc_weight`` > 0), alone or among the runs of an ensemble (its CTC head a member),
    is decoded by attention rescoring: the grid above on the CTC head(s), then :func:`rescoring_decoding` at the
    chosen rule and setting (the decoder's weight, and with ``beams`` the width of the n-best lists, chosen on val from
    ``decoder_weights``; several hybrids: the mean of their decoders' scores); its result adds "rescoring", the test
    with the language model alone ("test_ctc_lm") and of each decoder alone ("test_decoder_greedy", a list for an
    ensemble).

    ``rescore_lm`` (a byte-level causal LM, or the path of one: :mod:`torchssm.audio.neural_lm`; CTC decodings only):
    once the setting and the width are chosen, the n-best lists of val at them are rescored with the neural LM's
    log-probability at each weight of ``lm_weights`` and the lowest val CER (then WER, then the smaller weight)
    chooses the weight; test's lists are read at it. "test" is then the rescored result, "test_search" the search's
    own, "neural_lm" holds {"lm", "rows", "weight", "cpu_s" (what rescoring adds: the LM scores of val's and test's
    lists, and val's search at the grid's own width when that width is chosen)} and each test transcript its "search"
    one too.

    ``warps`` other than (1,) (CTC runs only): test-time warping, each recogniser read at each of these VTLP warps
    (:func:`~torchssm.audio.asr.warped_members`) and the copies decoded as one ensemble, under both combine rules;
    the result records "warps".

    ``val_heldout`` m (None: the runs' own val): every choice above made on a val of the task's ``n_val`` ordinary
    sentences and m with a held-out word (:func:`~torchssm.audio.synthetic.sentence_texts`), test-like when test
    holds them too; train, test and the language model are the runs'. The result records "val_heldout" and "val_size".
    The ``extra_texts`` should then leave out the new val sentences' docstrings too (``speech lm-text --val-heldout``:
    :func:`~torchssm.audio.prose.language_model_text` of the same texts).

    ``mbr_scales`` (CTC decodings without ``rescore_lm`` only): once the setting and the width are chosen, each val
    n-best list at them gives its minimum-Bayes-risk transcript (:mod:`torchssm.audio.mbr`: least expected character
    edit distance under the list's posterior sharpened by the scale) at each scale; the lowest val CER (then WER) among
    these and the search's own transcripts chooses (the search's on ties), and test's lists are read so. "mbr" holds
    {"rows" (the search's first, scale None), "scale" (None: the search's kept), "cpu_s"}; "test_search" the search's
    own test result, and each test transcript its "search" one.

    ``mix_texts`` (text of another domain, e.g. other packages' docstrings: ``speech lm-text --packages ...
    --no-stdlib``): each order's language model is interpolated with a model of them, at the in-domain weight of
    :data:`~torchssm.audio.lm.MIX_WEIGHTS` that gives val's transcripts the fewest bits per character
    (:class:`LoadedRuns`' ``lm``); the result records "lm_mix" {order: {"weight", "rows"}}."""
    cpu0 = _cpu_with_children()
    runs = [str(p) for p in run_paths(path)]
    kinds = [recognizer_kind(run) for run in runs]  # a missing or corrupt checkpoint fails here, before decoding
    for run, kind in zip(runs, kinds):
        if kind == "samba":
            raise ValueError(
                f"{run} is a Samba-ASR run without a CTC head (model.ctc_weight 0): its decoder decodes alone "
                "(torchssm transcribe, evaluate_checkpoint); speech decode needs a CTC head"
            )
    widths = _check_beams(beam, beams)
    if rescore_lm is not None and "hybrid" in kinds:
        raise ValueError("rescore_lm rescores a CTC decoding's n-best lists; a hybrid's decoder already rescores them")
    warps = check_warps(warps)
    if warps != (1.0,) and "hybrid" in kinds:
        raise ValueError("test-time warps read CTC recognisers only; a hybrid Samba-ASR run takes none")
    mbr_scales = tuple(check_scale(scale) for scale in mbr_scales)
    if mbr_scales and ("hybrid" in kinds or rescore_lm is not None):
        raise ValueError("MBR chooses from a CTC search's n-best lists: not with a hybrid's decoder or rescore_lm")
    neural = load_rescoring_lm(rescore_lm) if isinstance(rescore_lm, (str, os.PathLike)) else rescore_lm
    loaded = LoadedRuns(runs[0] if len(runs) == 1 else runs, data_dir, extra_texts, warps, val_heldout, mix_texts)
    rules = ("prob", "logprob") if len(loaded.members) > 1 else ("prob",)  # one model: the rules agree
    val, val_best_hyps = {}, {}
    for rule in rules:
        log(f"val grid: {len(orders) * len(alphas) * len(betas)} settings at beam {beam}, combine {rule} ...")
        rows_log = log if log_rows else (lambda line: None)
        rule_cpu0 = _cpu_with_children()
        grid = loaded.grid("val", rule, orders, alphas, betas, beam, rows_log, workers)
        val[rule] = {"best": grid["best"], "no_lm": grid["no_lm"], "cpu_s": _cpu_with_children() - rule_cpu0}
        val_best_hyps[rule] = grid["best_transcripts"]
    rule = min(rules, key=lambda r: (val[r]["best"]["cer"], val[r]["best"]["wer"]))
    best = val[rule]["best"]
    setting = {"beam": beam, "lm_order": best["order"], "alpha": best["alpha"], "beta": best["beta"]}
    if "hybrid" in kinds:
        log(f"chosen on val: combine {rule}, {format_rates(setting)}; rescoring ...")
        hybrid = rescoring_decoding(
            runs[0] if len(runs) == 1 else runs,
            setting,
            decoder_weights,
            log=log,
            combine=rule,
            beams=widths,
            loaded=loaded,
        )
        out: dict[str, Any] = {"runs": runs, "val_heldout": val_heldout, "val_size": len(loaded.dataset("val"))}
        if mix_texts:
            out["lm_mix"] = loaded.mix
        return out | {"val": val, "chosen_rule": rule, **hybrid, "cpu_s": _cpu_with_children() - cpu0}
    val_refs, val_hyps, beam_rows = loaded.references("val"), {beam: val_best_hyps[rule]}, []
    val_lists: dict[int, list] = {}  # width -> val's scored n-best lists, kept for the neural LM and MBR
    if len(widths) > 1:
        log(f"beams on val at that setting: {list(widths)} ...")
        for width in widths:
            if width not in val_hyps:
                val_lists[width] = loaded.scored_nbest("val", rule, setting | {"beam": width})
                val_hyps[width] = [loaded.vocab.decode(items[0][0]) for items in val_lists[width]]
            beam_rows.append({"beam": width, **error_rates(val_refs, val_hyps[width])})
            log(format_rates(beam_rows[-1]))
        setting["beam"] = min(beam_rows, key=lambda r: (r["cer"], r["wer"], r["beam"]))["beam"]
    rescoring: dict[str, Any] = {}
    if neural is not None:
        nlm_cpu0 = _cpu_with_children()
        log(f"neural LM rescoring on val: n-best {setting['beam']}, weights {list(lm_weights)} ...")
        searched = val_lists.get(setting["beam"]) or loaded.scored_nbest("val", rule, setting)  # the grid's width: none
        val_scored = lm_scored_lists(neural, searched, loaded.vocab)
        rows = []
        for w in lm_weights:
            rows.append({"weight": w, **error_rates(val_refs, rescored_transcripts(val_scored, loaded.vocab, w))})
            log(format_rates(rows[-1]))
        weight = float(min(rows, key=lambda r: (r["cer"], r["wer"], r["weight"]))["weight"])
        val_hyps[setting["beam"]] = rescored_transcripts(val_scored, loaded.vocab, weight)
        rescoring = {"lm": str(rescore_lm) if neural is not rescore_lm else type(neural).__name__}
        rescoring |= {"rows": rows, "weight": weight, "cpu_s": _cpu_with_children() - nlm_cpu0}
    mbr: dict[str, Any] = {}
    if mbr_scales:
        mbr_cpu0 = _cpu_with_children()
        log(f"minimum Bayes risk on val: n-best {setting['beam']}, scales {list(mbr_scales)} ...")
        searched = val_lists.get(setting["beam"]) or loaded.scored_nbest("val", rule, setting)
        distances = list_distances(searched)
        rows = [{"scale": None, **error_rates(val_refs, val_hyps[setting["beam"]])}]  # the search's own
        for scale in mbr_scales:
            chosen_hyps = mbr_transcripts(searched, loaded.vocab, scale, distances)
            rows.append({"scale": scale, **error_rates(val_refs, chosen_hyps)})
            log(format_rates(rows[-1]))
        best_row = min(range(len(rows)), key=lambda i: (rows[i]["cer"], rows[i]["wer"], i))
        mbr = {"rows": rows, "scale": rows[best_row]["scale"], "cpu_s": _cpu_with_children() - mbr_cpu0}
    log(f"chosen on val: combine {rule}, {format_rates(setting)}; decoding test once ...")
    refs, heldout = loaded.references("test"), loaded.task.extra.get("heldout_words", [])
    scored = loaded.scored_nbest("test", rule, setting)
    nbest = [[loaded.vocab.decode(y) for y, _ in items] for items in scored]
    search_hyps = [h[0] for h in nbest]
    hyps = search_hyps
    if neural is not None:
        test_cpu0 = _cpu_with_children()
        hyps = rescored_transcripts(lm_scored_lists(neural, scored, loaded.vocab), loaded.vocab, rescoring["weight"])
        rescoring["cpu_s"] += _cpu_with_children() - test_cpu0  # with val's: what rescoring adds
    if mbr.get("scale") is not None:
        test_cpu0 = _cpu_with_children()
        hyps = mbr_transcripts(scored, loaded.vocab, mbr["scale"])
        mbr["cpu_s"] += _cpu_with_children() - test_cpu0
    analysis = setting | transcript_analysis(
        loaded.task,
        saved_task_config(loaded.ckpt)[1],
        loaded.members[0],
        {"val": (val_refs, val_hyps[setting["beam"]]), "test": (refs, hyps)},
    )
    transcripts = analysis.pop("test_transcripts")
    out = {
        "runs": runs,
        "warps": list(warps),
        "val_heldout": val_heldout,
        "val_size": len(val_refs),
        "val": val,
        "chosen_rule": rule,
        "setting": setting,
        "beam_rows": beam_rows,
        "test": analysis["test"],
        "test_greedy": error_rates(refs, loaded.greedy("test", rule), heldout),
        "test_oracle": error_rates(refs, oracle_transcripts(refs, nbest), heldout),
        "analysis": analysis,
        "test_transcripts": transcripts,
        "val_transcripts": [{"ref": r, "hyp": h} for r, h in zip(val_refs, val_hyps[setting["beam"]])],
    }
    if mix_texts:
        out["lm_mix"] = loaded.mix
    if mbr:
        out["mbr"] = mbr
    if neural is not None:
        out["neural_lm"] = rescoring
    if neural is not None or mbr:
        out["test_search"] = error_rates(refs, search_hyps, heldout)
        for entry, search in zip(transcripts, search_hyps):
            entry["search"] = search
    return out | {"cpu_s": _cpu_with_children() - cpu0}


def _check_beams(beam: int, beams: Sequence[int]) -> tuple[int, ...]:
    """(``beam``, then each width of ``beams`` not equal to it), in order; ValueError for a width below 1."""
    widths = tuple(dict.fromkeys([beam, *beams]))
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"beam widths must be ints >= 1, got {width!r}")
    return widths


def rescoring_lists(
    model: AttentionRescoring, dataset, beam: int, lm=None, alpha: float = 0.0, beta: float = 0.0
) -> list:
    """Per item of ``dataset``, one utterance at a time (as ``transcribe --rescore`` decodes a file): ``model``'s
    ``scored_nbest`` (a hybrid :class:`~torchssm.audio.asr.SambaASR` or a :class:`~torchssm.audio.asr.CTCEnsemble`
    with hybrid members: the ``beam`` best of the CTC search, ``lm`` fused with ``alpha`` / ``beta``, each with its
    decoder log-probability)."""
    cast(nn.Module, model).eval()
    out = []
    for i in progress(range(len(dataset)), len(dataset), f"n-best {beam} and decoder scores"):
        batch = collate([dataset[i]], model.vocab)
        out += model.scored_nbest(batch["audio"], batch["audio_lengths"], beam, lm, alpha, beta)
    return out


def rescoring_decoding(
    path,
    setting: dict,
    decoder_weights: Sequence[float] = DECODER_WEIGHTS,
    extra_texts: Sequence[str] = (),
    data_dir=None,
    log=print,
    combine: str = "prob",
    beams: Sequence[int] = (),
    loaded: LoadedRuns | None = None,
) -> dict:
    """Attention rescoring of the hybrid Samba-ASR run at ``path`` (or of the ensemble of a list of runs with at least
    one hybrid among them, ``combine``: :func:`load_for_decoding`) with the CTC search ``setting`` ({"beam",
    "lm_order", "alpha", "beta"}, e.g. :func:`lm_grid`'s choice on val): on val, the CER / WER of every weight of
    ``decoder_weights`` (the n-best lists and decoder scores computed once, :func:`rescoring_lists`), the lowest CER
    (then WER, then the smaller weight) chosen; with ``beams`` (more widths than the setting's), the lists of each
    width are scored so and the width chosen with the weight (lowest CER, then WER, then the narrower beam, then the
    smaller weight); test decoded once, read at that weight and at 0 (the CTC search with the language model alone).
    Returns {"setting" (with the chosen beam), "rescoring": {"rows", "decoder_weight"}, "test", "test_ctc_lm",
    "test_oracle" (the n-best oracle: per utterance the list's hypothesis closest to the reference, the floor of
    any rescoring), "test_greedy" (the CTC head or the ensemble), "test_decoder_greedy" (one hybrid: its decoder
    alone; an ensemble: a list, one per hybrid member), "analysis" (test by accent / family / sentence)}.
    ``loaded``: the runs already loaded (:class:`LoadedRuns`, :func:`tuned_decoding`'s; ``path``, ``extra_texts`` and
    ``data_dir`` are then its)."""
    loaded = loaded or LoadedRuns(path, data_dir, extra_texts)
    ckpt, task, model = loaded.ckpt, loaded.task, loaded.decoding_model(combine)
    if not can_rescore(model):
        raise ValueError(f"rescoring needs a Samba-ASR run with a CTC head (model.ctc_weight > 0), got {ckpt}")
    lm = loaded.lm(int(setting["lm_order"]))
    alpha, beta = float(setting["alpha"]), float(setting["beta"])
    widths = _check_beams(int(setting["beam"]), beams)
    heldout = task.extra.get("heldout_words", [])

    proposer = "the ensemble" if isinstance(model, CTCEnsemble) else "the CTC head"
    log(f"rescoring on val: n-best {list(widths)} of {proposer}, decoder weights {list(decoder_weights)} ...")
    val_refs = loaded.references("val")
    rows = []
    for width in widths:
        val_lists = rescoring_lists(model, task.val, width, lm, alpha, beta)
        for w in decoder_weights:
            hyps = rescored_transcripts(val_lists, model.vocab, w)
            rows.append({"beam": width, "decoder_weight": w, **error_rates(val_refs, hyps, heldout)})
    chosen = min(rows, key=lambda r: (r["cer"], r["wer"], r["beam"], r["decoder_weight"]))
    weight, beam = float(chosen["decoder_weight"]), int(chosen["beam"])
    log(f"chosen on val: beam {beam}, decoder weight {weight} ({format_rates(chosen)}); decoding test once ...")
    refs = loaded.references("test")
    test_lists = rescoring_lists(model, task.test, beam, lm, alpha, beta)
    hyps = rescored_transcripts(test_lists, model.vocab, weight)
    ctc_lm_hyps = rescored_transcripts(test_lists, model.vocab, 0.0)
    nbest = [[model.vocab.decode(y) for y, _, _ in entries] for entries in test_lists]
    task_cfg = saved_task_config(ckpt)[1]
    analysis = {"test": error_rates(refs, hyps, heldout), **breakdowns_of_test(task_cfg, refs, hyps, heldout)}
    analysis["test_ctc_lm"] = breakdowns_of_test(task_cfg, refs, ctc_lm_hyps, heldout)
    if isinstance(model, CTCEnsemble):
        decoders: dict | list = [evaluate_asr(decoder, task.test, heldout, beam=1) for decoder in model.decoders]
    else:
        decoders = evaluate_asr(cast(SambaASR, model), task.test, heldout, beam=1)
    return {
        "setting": setting | {"beam": beam},
        "rescoring": {"rows": rows, "decoder_weight": weight},
        "test": analysis["test"],
        "test_ctc_lm": error_rates(refs, ctc_lm_hyps, heldout),
        "test_oracle": error_rates(refs, oracle_transcripts(refs, nbest), heldout),
        "test_greedy": error_rates(refs, loaded.greedy("test", combine), heldout),
        "test_decoder_greedy": decoders,
        "test_transcripts": [{"ref": r, "hyp": h, "ctc_lm": c} for r, h, c in zip(refs, hyps, ctc_lm_hyps)],
        "analysis": analysis,
    }
