"""Training and evaluation of the speech recognisers of :mod:`torchssm.audio.asr`.

A run is one YAML file (presets under ``torchssm/presets/audio/``)::

    task:  {name: spoken_sentences, n_train: 2000, ...}     a task whose items are {"audio", "text"}
    model: {kind: ctc | samba, d_model: 128, ...}           torchssm.audio.asr.ASRConfig
    train: {epochs: 20, batch_size: 16, lr: 2.0e-3, ...}    ASRTrainConfig below

The optimiser and schedule are the library's (``torchssm.train.optim.build_optimizer``: AdamW with
the layers' own parameter groups; ``build_scheduler``: linear warm-up then cosine), the checkpoints
``torchssm.train.checkpoint``'s (written atomically, config in the sidecar). Batches group utterances
of similar length (sorted within pools of 50 batches, as is usual for speech) in an order that depends
only on (seed, epoch). Metrics: CER and WER with jiwer, and the CER on held-out words.

Options (off by default): ``train.speed_perturb: [0.9, 1.0, 1.1]`` plays each training utterance, every
epoch, at a speed drawn uniformly from the list (Ko et al. 2015's factors; :func:`torchssm.audio.dsp.
speed_perturb`), ``model.spec_augment: LB | LD | SM | SS`` masks its log-mel frames (Park et al. 2019),
``train.init_encoder_from: <checkpoint>`` starts the encoder from another recogniser's (e.g. a trained
CTC model's encoder for Samba-ASR). ``train.max_cpu_minutes`` stops a run after the step that crosses it;
``train_asr(..., resume=True)`` (``torchssm speech train --resume``) continues it exactly.

A CTC run's history records per epoch ``ctc_dropped``: the training utterances (after speed
perturbation) whose transcripts need more frames than their audio gives (:func:`torchssm.audio.asr.
ctc_unalignable`); ``F.ctc_loss(zero_infinity=True)`` gives them a zero loss, so they teach nothing.
:func:`lm_grid` and :func:`evaluate_checkpoint` decode a CTC run with a character language model
(:mod:`torchssm.audio.lm`) built from its training transcripts; given several CTC runs they decode their
ensemble (:class:`torchssm.audio.asr.CTCEnsemble`, frame posteriors combined).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from torchssm.audio.asr import (
    ASRConfig,
    AttentionRescoring,
    CTCEnsemble,
    CTCRecognizer,
    CTCTranscription,
    SambaASR,
    SambaCTCHead,
    build_recognizer,
    can_rescore,
    count_unalignable,
    is_hybrid,
)
from torchssm.audio.ctc import char_error_rate, heldout_word_cer, oracle_transcripts, word_error_rate
from torchssm.audio.lm import GRID_ALPHAS, GRID_BEAM, GRID_BETAS, GRID_ORDERS
from torchssm.audio.progress import progress
from torchssm.audio.text import CharVocabulary

# the decoder weights of attention rescoring tried on val (:func:`rescoring_decoding`; 0: the CTC search alone):
# our grid, fixed before its first use (session 24)
DECODER_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


@dataclass
class ASRTrainConfig:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    out_dir: str = "runs/asr"
    threads: int = 1
    max_cpu_minutes: float = 0.0  # stop after this much CPU time (time.process_time; 0: no limit)
    eval_every: int = 1
    eval_beam: int = 1  # 1: greedy decoding in the per-epoch evaluation
    test_beam: int = 4  # the final test is decoded greedily and, when > 1, with this beam too
    test_limit: int = 0  # decode only the first N test utterances (0: all)
    speed_perturb: tuple = ()  # speed factors drawn per utterance and epoch (Ko et al. 2015: 0.9, 1.0, 1.1)
    init_encoder_from: str = ""  # a recogniser checkpoint whose encoder weights start this model's encoder
    keep_checkpoints: int = 3  # also keep the last K epochs in checkpoints/epoch-N (torchssm speech average)

    def __post_init__(self):
        from torchssm.audio.dsp import check_speed_factors

        self.speed_perturb = check_speed_factors(self.speed_perturb, "train.speed_perturb")
        k = self.keep_checkpoints
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"train.keep_checkpoints must be an int >= 0 (epochs kept), got {k!r}")


def _dataclass_from(cls, data: dict, what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; expected some of {sorted(names)}")
    return cls(**data)


def speed_picks(n: int, factors: Sequence[float], generator: torch.Generator) -> list[int]:
    """Indices into ``factors`` for ``n`` utterances, uniform (the draws :func:`perturb_speed` makes)."""
    return torch.randint(len(factors), (n,), generator=generator).tolist()


def perturb_speed(items: Sequence[dict], factors: Sequence[float], generator: torch.Generator) -> list[dict]:
    """``items`` with each audio played at a speed drawn uniformly from ``factors`` (text unchanged)."""
    from torchssm.audio.dsp import speed_perturb

    picks = speed_picks(len(items), factors, generator)
    return [
        it if factors[k] == 1.0 else {**it, "audio": speed_perturb(np.asarray(it["audio"]), factors[k])}
        for it, k in zip(items, picks)
    ]


def load_encoder(model: nn.Module, path) -> None:
    """Copy the encoder weights of the recogniser checkpoint at ``path`` into ``model.encoder``."""
    encoder = cast(nn.Module, model.encoder)
    theirs = cast(nn.Module, load_recognizer(path).encoder).state_dict()
    if {k: v.shape for k, v in encoder.state_dict().items()} != {k: v.shape for k, v in theirs.items()}:
        raise ValueError(f"the encoder of {path} does not match this model's (d_model, n_layers, n_mels, layer)")
    encoder.load_state_dict(theirs)


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


def train_asr(config: dict, data_dir=None, task=None, log=print, resume: bool = False) -> dict:
    """Train the recogniser of ``config`` ({task, model, train}); returns the final metrics.

    ``train.out_dir``/last is saved after every epoch with the optimizer, schedule and RNG states; a run
    stopped by ``train.max_cpu_minutes`` saves where it stopped, part-way through an epoch too.
    ``resume=True`` continues that run (the same config; only ``train.max_cpu_minutes`` may differ): its
    weights, optimizer, schedule, RNG states and history, and, inside a part-done epoch, the next batch of
    the epoch's order (with the speed draws of the batches done replayed), so that it ends where a run
    that was never stopped ends."""
    from torchssm.bench.common import environment
    from torchssm.data.registry import build_task
    from torchssm.runs import SNAPSHOTS
    from torchssm.train.checkpoint import prune_checkpoints, save_checkpoint, snapshot_checkpoint
    from torchssm.train.optim import build_optimizer
    from torchssm.train.schedule import build_scheduler

    unknown = sorted(set(config) - {"task", "model", "train"})
    if unknown:
        raise ValueError(f"unknown top-level keys {unknown}; expected task, model, train")
    model_cfg = _dataclass_from(ASRConfig, dict(config.get("model") or {}), "model")
    train_cfg = dict(config.get("train") or {})
    if "max_minutes" in train_cfg:
        raise ValueError(
            "train.max_minutes (a wall-time cap) is now train.max_cpu_minutes (CPU minutes, time.process_time)"
        )
    tc = _dataclass_from(ASRTrainConfig, train_cfg, "train")
    task_cfg = dict(config.get("task") or {"name": "spoken_sentences"})
    if task is None:
        task = build_task(task_cfg.pop("name"), data_dir=data_dir, **task_cfg)
    if task.info.kind != "transcription":
        raise ValueError(
            f"task {task.info.name!r} is a {task.info.kind!r} task; speech recognition needs "
            "a 'transcription' task (spoken_sentences, librispeech)"
        )
    heldout = task.extra.get("heldout_words", [])
    threads = torch.get_num_threads()
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    try:
        torch.manual_seed(tc.seed)
        model = build_recognizer(model_cfg)
        if tc.init_encoder_from:
            load_encoder(model, tc.init_encoder_from)
            log(f"encoder initialised from {tc.init_encoder_from}")
        lengths = [len(task.train[i]["audio"]) for i in range(len(task.train))]
        steps_per_epoch = -(-len(lengths) // tc.batch_size)
        optimizer = build_optimizer(model, tc.lr, tc.weight_decay)
        total_steps = tc.epochs * steps_per_epoch
        scheduler = build_scheduler(optimizer, total_steps, min(tc.warmup_steps, total_steps))
        out_dir = Path(tc.out_dir)
        full_config = {"task": dict(config.get("task") or {}), "model": model_cfg.to_dict(), "train": asdict(tc)}
        start_wall, cpu0 = time.perf_counter(), time.process_time()
        history: list[dict] = []
        host = environment(torch.device("cpu"))  # recorded in every checkpoint (docs/training.md, "What a run does")
        start_epoch, done_batches, stopped_early = 0, 0, False
        if resume:
            history, start_epoch, done_batches = _resume_asr(out_dir / "last", model, optimizer, scheduler, full_config)
            where = f"epoch {start_epoch}" + (f" + {done_batches} batches" if done_batches else "")
            log(f"resumed from {out_dir / 'last'} at {where}")
        for epoch in range(start_epoch, tc.epochs):
            model.train()
            total, count, dropped = 0.0, 0, 0
            order = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
            batches = length_batches(lengths, tc.batch_size, order)
            skip = done_batches if epoch == start_epoch else 0
            if tc.speed_perturb:  # the batches trained before a resume: replay their speed draws only
                for batch_index in batches[:skip]:
                    speed_picks(len(batch_index), tc.speed_perturb, order)
            trained = skip
            for batch_index in progress(batches[skip:], len(batches) - skip, f"epoch {epoch + 1}/{tc.epochs}"):
                items = [task.train[i] for i in batch_index]
                if tc.speed_perturb:
                    items = perturb_speed(items, tc.speed_perturb, order)
                batch = collate(items, model.vocab)
                if _has_ctc_loss(model):  # zero_infinity drops these from the loss: count them
                    dropped += count_unalignable(
                        model, batch["audio_lengths"], batch["targets"], batch["target_lengths"]
                    )
                loss = model.loss(batch["audio"], batch["audio_lengths"], batch["targets"], batch["target_lengths"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                total, count, trained = total + float(loss.detach()), count + 1, trained + 1
                if tc.max_cpu_minutes and time.process_time() - cpu0 > 60 * tc.max_cpu_minutes:
                    stopped_early = True
                    break
            record = {
                "epoch": epoch + 1,
                "train_loss": total / max(count, 1),  # over the batches of this call
                "wall_s": time.perf_counter() - start_wall,
                "cpu_s": time.process_time() - cpu0,
            }
            if trained < len(batches):
                record["epoch_batches"] = trained  # a part-done epoch: --resume goes on from its next batch
            if _has_ctc_loss(model):
                record["ctc_dropped"] = dropped  # training utterances CTC could not align this epoch
            last = stopped_early or epoch + 1 == tc.epochs
            if task.val is not None and ((epoch + 1) % tc.eval_every == 0 or last):
                metrics = evaluate_asr(model, task.val, heldout, beam=tc.eval_beam)
                record.update(val_cer=metrics["cer"], val_wer=metrics["wer"])
                if is_hybrid(model):  # the hybrid's CTC head, greedy
                    record["val_ctc_cer"] = evaluate_asr(SambaCTCHead(model), task.val, beam=1)["cer"]
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            history.append(record)
            # saved every epoch, so that a run stopped from outside keeps its last finished epoch, with what
            # --resume needs (optimizer, schedule; the RNG states are added by save_checkpoint)
            save_checkpoint(
                out_dir / "last",
                model,
                optimizer,
                scheduler,
                config=full_config,
                epoch=epoch + ("epoch_batches" not in record),  # epochs completed
                epoch_batches=record.get("epoch_batches", 0),
                history=history,
                environment=host,
            )
            if tc.keep_checkpoints > 0 and "epoch_batches" not in record:  # snapshots are of whole epochs
                snapshot_checkpoint(out_dir / "last", out_dir / SNAPSHOTS / f"epoch-{epoch + 1:06d}")
                prune_checkpoints(out_dir / SNAPSHOTS, tc.keep_checkpoints)
            if stopped_early:
                log(f"stopped after {tc.max_cpu_minutes} CPU minutes (train.max_cpu_minutes) in epoch {epoch + 1}")
                break
        result: dict[str, Any] = {"history": history, "stopped_early": stopped_early}
        limit = tc.test_limit or None
        for name, beam in (("test_greedy", 1), ("test_beam", tc.test_beam)):
            if name == "test_greedy" or beam > 1:
                result[name] = evaluate_asr(model, task.test, heldout, beam=beam, limit=limit)
                log(f"{name} (beam {beam}): {_fmt(result[name])}")
        if is_hybrid(model):
            result["test_ctc_greedy"] = evaluate_asr(SambaCTCHead(model), task.test, heldout, beam=1, limit=limit)
            log(f"test_ctc_greedy (the CTC head, beam 1): {_fmt(result['test_ctc_greedy'])}")
        log("(decoded without a language model: `torchssm speech decode` chooses one on val; docs/speech.md)")
        return result
    finally:
        torch.set_num_threads(threads)


def asr_snapshots(run_dir, epochs: Sequence[int] | None = None) -> list[Path]:
    """The epoch checkpoints ``<run_dir>/checkpoints/epoch-NNNNNN`` a recogniser run kept (``train.keep_checkpoints``)
    of ``epochs`` (default: all kept), oldest first."""
    from torchssm.train.averaging import kept_snapshots

    run_dir = Path(run_dir)
    if not (run_dir / "last").is_dir():
        raise ValueError(f"{run_dir} is not a recogniser run directory (no last/ checkpoint in it)")
    return kept_snapshots(run_dir, epochs)


def average_asr_checkpoints(checkpoints, out, epochs: Sequence[int] | None = None, overwrite: bool = False) -> Path:
    """Checkpoint averaging of one recogniser run: the uniform mean of the weights of ``checkpoints`` (a run directory:
    its kept epochs ``epochs``, default all; or a list of checkpoint directories of one run, at least two) written
    as a checkpoint directory ``out`` (the last one's config, epoch and history; ``averaged_from`` in its sidecar)
    that ``speech decode``, ``transcribe`` and ensembles read as any. The mean of points of one training
    trajectory, SWA's averaging step (Izmailov et al. 2018, Sec. 3.2), as ASR recipes average their last epochs
    (e.g. ESPnet's ``average_nbest_models``; the number of epochs is the user's choice). The recognisers normalise
    by LayerNorm only, so there are no batch-norm statistics to re-estimate
    (:func:`torchssm.train.averaging.average_checkpoints` checks the weights and the model configs)."""
    from torchssm.train.averaging import average_checkpoints, check_average_output, has_batch_norm
    from torchssm.train.checkpoint import read_checkpoint_state, save_checkpoint

    paths = asr_snapshots(checkpoints, epochs) if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    paths = [Path(p) for p in paths]
    out = Path(out)
    if len(paths) < 2:
        raise ValueError(f"checkpoint averaging needs at least 2 checkpoints, got {[str(p) for p in paths]}")
    check_average_output(out, paths, overwrite)
    weights = average_checkpoints(paths)  # equal model configs, intact files
    model = load_recognizer(paths[-1])
    if has_batch_norm(model):
        raise ValueError(f"{paths[-1]} has batch norms, whose statistics averaging would leave stale")
    model.load_state_dict(weights)
    state = read_checkpoint_state(paths[-1])
    save_checkpoint(
        out,
        model,
        config=state["config"],
        epoch=state.get("epoch"),
        history=state.get("history"),
        averaged_from=[str(p) for p in paths],
    )
    return out


def _has_ctc_loss(model) -> bool:
    """Whether ``model`` is trained with a CTC loss: a CTC recogniser or a hybrid Samba-ASR."""
    return isinstance(model, CTCRecognizer) or is_hybrid(model)


def _resume_asr(path: Path, model, optimizer, scheduler, config: dict) -> tuple[list, int, int]:
    """Load the run saved at ``path`` (``train_asr``'s ``last``) into model, optimizer and scheduler, with its
    RNG states; returns (history, epochs completed, batches of the next epoch done). The config must be the
    run's own, apart from what a resumed run may change (``torchssm.train.loop.RUNTIME_KEYS``: out_dir,
    threads, max_cpu_minutes, init_encoder_from, ...)."""
    from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state
    from torchssm.train.loop import config_differences

    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume at {path} (train.out_dir/last of a speech train run)")
    saved = read_checkpoint_state(path)
    if "epoch_batches" not in saved:
        raise ValueError(f"{path} was saved without its optimizer and schedule (before --resume existed)")

    diffs = config_differences(saved["config"], json.loads(json.dumps(config)))  # tuples as the sidecar's lists
    if diffs:
        raise ValueError(f"cannot resume {path}: the config differs from the run's ({'; '.join(diffs)})")
    state = load_checkpoint(path, model, optimizer, scheduler, restore_rng=True)
    history = list(state["history"])
    if state["epoch_batches"]:
        history = history[:-1]  # the part-done epoch is recorded again when it ends
    return history, int(state["epoch"]), int(state["epoch_batches"])


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
    (:func:`word_hits_by_position`), every test transcript ("test_transcripts": [{"ref", "hyp"}], for paired
    comparisons, :func:`~torchssm.audio.ctc.paired_cer_difference`) and, for CTC models, train and test CER by the
    share of its frames an utterance's transcript needs (:func:`ctc_frame_need`, at the model's frame rate)."""
    from torchssm.audio.lm import lm_from_task

    _, task_cfg = saved_task_config(_runs(path)[0])
    _, task, model = load_for_decoding(path, data_dir, combine)
    lm = lm_from_task(task, lm_order, extra_texts) if lm_order else None
    ctc = model.members[0] if isinstance(model, CTCEnsemble) else model  # its frame rate is the ensemble's
    transcripts = {}
    for split, dataset, limit in (("train", task.train, n_train), ("val", task.val, None), ("test", task.test, None)):
        if dataset is None or (limit is not None and limit < 1):
            continue
        transcripts[split] = transcribe_dataset(model, dataset, beam=beam, limit=limit, lm=lm, alpha=alpha, beta=beta)
    setting = {"beam": beam, "lm_order": lm_order, "alpha": alpha, "beta": beta}
    return setting | transcript_analysis(task, task_cfg, ctc, transcripts)


def transcript_analysis(task, task_cfg: dict, ctc, transcripts: dict) -> dict:
    """:func:`analyse_recognizer`'s breakdowns of the (references, hypotheses) of each split in ``transcripts``
    ({"train" (its first items), "val", "test"}; test required) of ``task`` (``task_cfg``: the run's saved task
    section; ``ctc``: the recogniser, or an ensemble's first member, whose frame rate buckets the CER by frame need
    when it is a :class:`~torchssm.audio.asr.CTCRecognizer`)."""
    out: dict = {}
    for split, (refs, hyps) in transcripts.items():
        out[split] = error_rates(refs, hyps)
        if isinstance(ctc, CTCRecognizer) and split != "val":  # CER by how many of its frames CTC needs
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


def _checkpoint_dir(path) -> Path:
    """A recogniser's checkpoint directory: ``path``, or its ``last`` when ``path`` is a run directory."""
    path = Path(path)
    return path / "last" if (path / "last").is_dir() else path


UNNAMED_TASK = "spoken_sentences"  # the task of a saved task section that names none


def saved_task_config(path) -> tuple[Path, dict]:
    """(checkpoint directory, a copy of the ``task`` section of its config, {} without one)."""
    from torchssm.train.checkpoint import read_checkpoint_state

    ckpt = _checkpoint_dir(path)
    return ckpt, dict((read_checkpoint_state(ckpt).get("config") or {}).get("task") or {})


def checkpoint_task(path, data_dir=None):
    """(checkpoint directory, the task of its config rebuilt from the data cache) of a recogniser run."""
    from torchssm.data.registry import build_task

    ckpt, task_cfg = saved_task_config(path)
    if not task_cfg:
        raise ValueError(f"{ckpt} has no task in its config: cannot rebuild its data")
    name = task_cfg.pop("name", UNNAMED_TASK)
    return ckpt, build_task(name, data_dir=data_dir, **task_cfg)


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
    (:func:`grid_transcripts`; the same rows; "cpu_s" counts theirs too)."""
    if split not in ("val", "test", "train"):
        raise ValueError(f"split must be val, test or train, got {split!r}")
    _check_workers(workers)
    cpu0 = _cpu_with_children()
    loaded = LoadedRuns(path, data_dir, extra_texts)
    out = loaded.grid(split, combine, orders, alphas, betas, beam, log, workers)
    return out | {"cpu_s": _cpu_with_children() - cpu0}


class LoadedRuns:
    """The run(s) of one decoding loaded once (:func:`load_for_decoding`): ``ckpt`` (the first's checkpoint
    directory), ``task`` (rebuilt from the data cache), ``members`` (CTC recognisers; a hybrid Samba-ASR run by its
    CTC head, :class:`~torchssm.audio.asr.SambaCTCHead`) and ``model`` (the recogniser, or the
    :class:`~torchssm.audio.asr.CTCEnsemble` of several). Each member's emissions on a split are computed once
    (:func:`ctc_emissions`) and combined under either rule on demand (:meth:`emissions`), as are the language models
    (:meth:`lm`): the val grids of both rules, the beams and the test decoding of :func:`tuned_decoding` share them."""

    def __init__(self, path, data_dir=None, extra_texts: Sequence[str] = ()):
        self.ckpt, self.task, self.model = load_for_decoding(path, data_dir)
        model = self.model
        self.members: list[CTCRecognizer | SambaCTCHead] = []
        for m in list(model.members) if isinstance(model, CTCEnsemble) else [model]:
            m = SambaCTCHead(m) if is_hybrid(m) else m
            if not isinstance(m, (CTCRecognizer, SambaCTCHead)):
                raise ValueError(
                    f"decoding with a language-model grid needs a CTC recogniser (or a Samba-ASR one with a CTC "
                    f"head), got {type(m).__name__} at {self.ckpt}"
                )
            self.members.append(m)
        self.vocab: CharVocabulary = self.members[0].vocab
        self.extra_texts = list(extra_texts)
        self._member_emissions: dict[str, list[list[torch.Tensor]]] = {}  # split -> per member, per item (t_i, n_ctc)
        self._lms: dict[int, Any] = {}  # order -> CharNGramLM

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
        """The character language model of ``order`` from the training transcripts and ``extra_texts`` (None for 0)."""
        from torchssm.audio.lm import lm_from_task

        if not order:
            return None
        if order not in self._lms:
            self._lms[order] = lm_from_task(self.task, order, self.extra_texts)
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
        log(f"{split}, beam {beam}, no language model: {_fmt(out['no_lm'])}")
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
                log(_fmt(row))
        best = min(range(len(out["rows"])), key=lambda i: (out["rows"][i]["cer"], out["rows"][i]["wer"]), default=None)
        out["best"] = None if best is None else out["rows"][best]
        out["best_transcripts"] = None if best is None else transcripts[best]
        return out

    def nbest(self, split: str, combine: str, setting: dict) -> list[list[str]]:
        """Per item of ``split``: the transcripts of the prefix beam search's n-best at ``setting`` ({"beam",
        "lm_order", "alpha", "beta"}), best first (the first is the decoding's transcript)."""
        from torchssm.audio.ctc import prefix_beam_search

        lm = self.lm(int(setting["lm_order"]))
        beam, alpha, beta = int(setting["beam"]), float(setting["alpha"]), float(setting["beta"])
        emissions = self.emissions(split, combine)
        return [
            [self.vocab.decode(y) for y, _ in prefix_beam_search(e, beam, lm=lm, alpha=alpha, beta=beta)]
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
) -> dict:
    """:func:`evaluate_asr` of the recogniser at ``path`` (or the ensemble of a list of CTC ones,
    :func:`load_for_decoding`) on a split of its task, with a character language model of ``lm_order``
    (0: none) from the run's training transcripts (and ``extra_texts``) fused."""
    from torchssm.audio.lm import lm_from_task

    if split not in ("val", "test", "train"):
        raise ValueError(f"split must be val, test or train, got {split!r}")
    cpu0 = time.process_time()
    _, task, model = load_for_decoding(path, data_dir, combine)
    lm = lm_from_task(task, lm_order, extra_texts) if lm_order else None
    out = evaluate_asr(
        model, getattr(task, split), task.extra.get("heldout_words", []), beam, lm=lm, alpha=alpha, beta=beta
    )
    out["cpu_s"] = time.process_time() - cpu0
    return out


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
    "test_transcripts", "cpu_s"}. Each checkpoint is loaded once and each member encodes val and test once
    (:class:`LoadedRuns`). ``extra_texts``: more language-model text (e.g.
    :func:`~torchssm.audio.prose.language_model_text`'s). ``log`` gets a line per stage, and with ``log_rows`` one
    per setting of the grid. ``workers`` > 1: the grid's settings shared among forked processes
    (:func:`grid_transcripts`; the same choice and result, less wall time where cores are free).

    A hybrid Samba-ASR run (``model.ctc_weight`` > 0), alone or among the runs of an ensemble (its CTC head a member),
    is decoded by attention rescoring: the grid above on the CTC head(s), then :func:`rescoring_decoding` at the
    chosen rule and setting (the decoder's weight, and with ``beams`` the width of the n-best lists, chosen on val from
    ``decoder_weights``; several hybrids: the mean of their decoders' scores); its result adds "rescoring", the test
    with the language model alone ("test_ctc_lm") and of each decoder alone ("test_decoder_greedy", a list for an
    ensemble)."""
    cpu0 = _cpu_with_children()
    runs = [str(p) for p in _runs(path)]
    kinds = [_recognizer_kind(run) for run in runs]  # a missing or corrupt checkpoint fails here, before decoding
    for run, kind in zip(runs, kinds):
        if kind == "samba":
            raise ValueError(
                f"{run} is a Samba-ASR run without a CTC head (model.ctc_weight 0): its decoder decodes alone "
                "(torchssm transcribe, evaluate_checkpoint); speech decode needs a CTC head"
            )
    widths = _check_beams(beam, beams)
    loaded = LoadedRuns(runs[0] if len(runs) == 1 else runs, data_dir, extra_texts)
    rules = ("prob", "logprob") if len(runs) > 1 else ("prob",)  # one model: the rules agree
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
        log(f"chosen on val: combine {rule}, {_fmt(setting)}; rescoring ...")
        hybrid = rescoring_decoding(
            runs[0] if len(runs) == 1 else runs,
            setting,
            decoder_weights,
            log=log,
            combine=rule,
            beams=widths,
            loaded=loaded,
        )
        out = {"runs": runs, "val": val, "chosen_rule": rule, **hybrid}
        return out | {"cpu_s": _cpu_with_children() - cpu0}
    val_refs, val_hyps, beam_rows = loaded.references("val"), {beam: val_best_hyps[rule]}, []
    if len(widths) > 1:
        log(f"beams on val at that setting: {list(widths)} ...")
        for width in widths:
            if width not in val_hyps:
                val_hyps[width] = [hyps[0] for hyps in loaded.nbest("val", rule, setting | {"beam": width})]
            beam_rows.append({"beam": width, **error_rates(val_refs, val_hyps[width])})
            log(_fmt(beam_rows[-1]))
        setting["beam"] = min(beam_rows, key=lambda r: (r["cer"], r["wer"], r["beam"]))["beam"]
    log(f"chosen on val: combine {rule}, {_fmt(setting)}; decoding test once ...")
    refs, heldout = loaded.references("test"), loaded.task.extra.get("heldout_words", [])
    nbest = loaded.nbest("test", rule, setting)
    hyps = [h[0] for h in nbest]
    analysis = setting | transcript_analysis(
        loaded.task,
        saved_task_config(loaded.ckpt)[1],
        loaded.members[0],
        {"val": (val_refs, val_hyps[setting["beam"]]), "test": (refs, hyps)},
    )
    transcripts = analysis.pop("test_transcripts")
    return {
        "runs": runs,
        "val": val,
        "chosen_rule": rule,
        "setting": setting,
        "beam_rows": beam_rows,
        "test": analysis["test"],
        "test_greedy": error_rates(refs, loaded.greedy("test", rule), heldout),
        "test_oracle": error_rates(refs, oracle_transcripts(refs, nbest), heldout),
        "analysis": analysis,
        "test_transcripts": transcripts,
        "cpu_s": _cpu_with_children() - cpu0,
    }


def _check_beams(beam: int, beams: Sequence[int]) -> tuple[int, ...]:
    """(``beam``, then each width of ``beams`` not equal to it), in order; ValueError for a width below 1."""
    widths = tuple(dict.fromkeys([beam, *beams]))
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"beam widths must be ints >= 1, got {width!r}")
    return widths


def _recognizer_kind(path) -> str:
    """ "ctc", "samba" or "hybrid" (Samba-ASR with a CTC head) of the recogniser checkpoint at ``path``, from its
    saved config (FileNotFoundError / ValueError for a missing or foreign checkpoint)."""
    from torchssm.train.checkpoint import read_checkpoint_state

    ckpt = _checkpoint_dir(path)
    model = (read_checkpoint_state(ckpt).get("config") or {}).get("model") or {}
    if "kind" not in model:
        raise ValueError(f"{ckpt} is not a speech recogniser checkpoint (no model.kind in its config)")
    if model["kind"] == "samba":
        return "hybrid" if model.get("ctc_weight") else "samba"
    return str(model["kind"])


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


def rescored_transcripts(lists: list, vocab: CharVocabulary, decoder_weight: float) -> list[str]:
    """The transcript of each :func:`rescoring_lists` entry chosen by :func:`~torchssm.audio.asr.best_rescored`."""
    from torchssm.audio.asr import best_rescored

    return [vocab.decode(best_rescored(entries, decoder_weight)) for entries in lists]


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
    log(f"chosen on val: beam {beam}, decoder weight {weight} ({_fmt(chosen)}); decoding test once ...")
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


def _need_bucket(ratio: float) -> str:
    """The bucket of a :func:`ctc_frame_need` ratio in :func:`analyse_recognizer`."""
    for edge, name in ((0.6, "< 0.6"), (0.7, "0.6-0.7"), (0.8, "0.7-0.8"), (0.9, "0.8-0.9"), (1.0, "0.9-1")):
        if ratio < edge:
            return name
    return "> 1 (cannot align)" if ratio > 1 else "0.9-1"


def _fmt(m: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items() if k != "examples")


def load_for_decoding(path, data_dir=None, combine: str = "prob"):
    """(checkpoint directory, task rebuilt from the data cache, model) for decoding ``path``: a run directory or
    checkpoint, or a list of CTC or hybrid Samba-ASR ones decoded as their :class:`~torchssm.audio.asr.CTCEnsemble`
    (``combine``, :func:`load_ctc_ensemble`) on the task of the first (its split and its training transcripts for
    the language model; the members should have been trained on the same sentences)."""
    if isinstance(path, (str, os.PathLike)):
        ckpt, task = checkpoint_task(path, data_dir)
        return ckpt, task, load_recognizer(ckpt)
    paths = _runs(path)
    check_same_sentences(paths)
    ckpt, task = checkpoint_task(paths[0], data_dir)
    return ckpt, task, load_ctc_ensemble(paths, combine)


def _runs(path) -> list:
    """``[path]`` for one run directory or checkpoint, else the list of them ``path`` holds (ValueError if empty)."""
    if isinstance(path, (str, os.PathLike)):
        return [path]
    paths = list(path)
    if not paths:
        raise ValueError("expected a checkpoint or a list of CTC checkpoints, got an empty list")
    return paths


# task options that change only how the training sentences are spoken (voices, accents), not the sentences, val or test
TRAINING_VOICE_OPTIONS = ("voices_per_sentence", "extra_train_variants", "extra_train_accents", "accent_augment")


def _completed_task_config(path) -> dict:
    """The saved task section of the run at ``path`` with every option it leaves out at the builder's default."""
    from torchssm.data.registry import task_defaults

    cfg = saved_task_config(path)[1]
    name = cfg.get("name", UNNAMED_TASK)
    try:
        defaults = task_defaults(name)
    except ValueError:  # a task this install does not know: compare the saved sections as they are
        defaults = {}
    return {**defaults, **cfg, "name": name}


def check_same_sentences(paths: Sequence) -> None:
    """ValueError unless the runs at ``paths`` were trained on one task: their saved task configs, completed with the
    task builder's defaults (:func:`~torchssm.data.registry.task_defaults`), equal but for
    :data:`TRAINING_VOICE_OPTIONS` (an ensemble is decoded on the first run's val / test with a language model of
    its training transcripts, :func:`load_for_decoding`)."""
    first, first_cfg = paths[0], _completed_task_config(paths[0])
    for other in paths[1:]:
        other_cfg = _completed_task_config(other)
        for key in sorted(set(first_cfg) | set(other_cfg)):
            if key not in TRAINING_VOICE_OPTIONS and first_cfg.get(key) != other_cfg.get(key):
                raise ValueError(
                    f"the runs of an ensemble must share one task: task.{key} is {first_cfg.get(key)!r} in {first} "
                    f"but {other_cfg.get(key)!r} in {other}"
                )


def load_ctc_ensemble(paths: Sequence, combine: str = "prob") -> CTCEnsemble:
    """The CTC recognisers saved at ``paths`` decoded as one (:class:`~torchssm.audio.asr.CTCEnsemble`); a hybrid
    Samba-ASR run joins by its CTC head (:class:`~torchssm.audio.asr.SambaCTCHead`), its decoder then rescores."""
    members: list[CTCRecognizer | SambaCTCHead] = []
    for path in paths:
        model = load_recognizer(path)
        if isinstance(model, SambaASR) and not model.has_ctc:
            raise ValueError(
                f"{path} is a Samba-ASR run without a CTC head (model.ctc_weight 0): an ensemble combines CTC "
                "recognisers and hybrid Samba-ASR runs"
            )
        members.append(SambaCTCHead(model) if isinstance(model, SambaASR) else model)
    return CTCEnsemble(members, combine).eval()


def load_recognizer(path) -> CTCRecognizer | SambaASR:
    """The recogniser saved by :func:`train_asr` at ``path`` (a checkpoint directory or its run directory)."""
    from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state

    path = _checkpoint_dir(path)
    state = read_checkpoint_state(path)
    config = state.get("config") or {}
    if "model" not in config or "kind" not in config["model"]:
        raise ValueError(f"{path} is not a speech recogniser checkpoint (no model.kind in its config)")
    model = build_recognizer(_dataclass_from(ASRConfig, config["model"], "model"))
    load_checkpoint(path, model)
    return model.eval()
