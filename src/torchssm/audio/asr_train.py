"""Training of the speech recognisers of :mod:`torchssm.audio.asr`.

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
``model.vtlp: [0.9, 1.1]`` warps each utterance's spectrum by its own factor (Jaitly & Hinton 2013; :class:`torchssm.
audio.asr.ASRConfig`),
``train.init_encoder_from: <checkpoint>`` starts the encoder from another recogniser's (e.g. a trained
CTC model's encoder for Samba-ASR). ``train.max_cpu_minutes`` stops a run after the step that crosses it;
``train_asr(..., resume=True)`` (``torchssm speech train --resume``) continues it exactly.

A CTC run's history records per epoch ``ctc_dropped``: the training utterances (after speed
perturbation) whose transcripts need more frames than their audio gives (:func:`torchssm.audio.asr.
ctc_unalignable`); ``F.ctc_loss(zero_infinity=True)`` gives them a zero loss, so they teach nothing.
The other stages of a recogniser's life have their own modules: :mod:`torchssm.audio.batches` (the
batches of utterances), :mod:`torchssm.audio.asr_eval` (scoring transcripts), :mod:`torchssm.audio.asr_runs`
(loading saved runs and ensembles) and :mod:`torchssm.audio.decoding` (the decoding of record, with a
language model tuned on val).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from torchssm.audio.asr import (
    ASRConfig,
    CTCRecognizer,
    SambaCTCHead,
    build_recognizer,
    count_unalignable,
    is_hybrid,
)
from torchssm.audio.asr_eval import evaluate_asr, format_rates
from torchssm.audio.asr_runs import load_recognizer
from torchssm.audio.batches import collate, length_batches
from torchssm.audio.progress import progress
from torchssm.models.config import ConfigDict


@dataclass
class ASRTrainConfig(ConfigDict):
    config_name = "train"  # class attribute (no annotation): not a dataclass field

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
    model_cfg = ASRConfig.from_dict(dict(config.get("model") or {}))
    train_cfg = dict(config.get("train") or {})
    if "max_minutes" in train_cfg:
        raise ValueError(
            "train.max_minutes (a wall-time cap) is now train.max_cpu_minutes (CPU minutes, time.process_time)"
        )
    tc = ASRTrainConfig.from_dict(train_cfg)
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
                for removed in prune_checkpoints(out_dir / SNAPSHOTS, tc.keep_checkpoints):
                    log(f"removed {SNAPSHOTS}/{removed.name} (train.keep_checkpoints={tc.keep_checkpoints})")
            if stopped_early:
                log(f"stopped after {tc.max_cpu_minutes} CPU minutes (train.max_cpu_minutes) in epoch {epoch + 1}")
                break
        result: dict[str, Any] = {"history": history, "stopped_early": stopped_early}
        limit = tc.test_limit or None
        for name, beam in (("test_greedy", 1), ("test_beam", tc.test_beam)):
            if name == "test_greedy" or beam > 1:
                result[name] = evaluate_asr(model, task.test, heldout, beam=beam, limit=limit)
                log(f"{name} (beam {beam}): {format_rates(result[name])}")
        if is_hybrid(model):
            result["test_ctc_greedy"] = evaluate_asr(SambaCTCHead(model), task.test, heldout, beam=1, limit=limit)
            log(f"test_ctc_greedy (the CTC head, beam 1): {format_rates(result['test_ctc_greedy'])}")
        log("(decoded without a language model: `torchssm speech decode` chooses one on val; docs/speech.md)")
        return result
    finally:
        torch.set_num_threads(threads)


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

    # the saved model and train sections with the defaults of keys added since (a run older than model.vtlp resumes)
    saved_config = dict(saved["config"])
    for section, kind in (("model", ASRConfig), ("train", ASRTrainConfig)):
        saved_config[section] = kind.from_dict(dict(saved_config.get(section) or {})).to_dict()
    as_saved = json.loads(json.dumps(saved_config))  # tuples as the sidecar's lists, on both sides
    diffs = config_differences(as_saved, json.loads(json.dumps(config)))
    if diffs:
        raise ValueError(f"cannot resume {path}: the config differs from the run's ({'; '.join(diffs)})")
    state = load_checkpoint(path, model, optimizer, scheduler, restore_rng=True)
    history = list(state["history"])
    if state["epoch_batches"]:
        history = history[:-1]  # the part-done epoch is recorded again when it ends
    return history, int(state["epoch"]), int(state["epoch_batches"])


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
