"""Saved speech-recogniser runs (written by :func:`torchssm.audio.asr_train.train_asr`): the recogniser of a
checkpoint or run directory (:func:`load_recognizer`), the task of its config rebuilt from the data cache
(:func:`checkpoint_task`), and a list of CTC (or hybrid Samba-ASR) runs loaded as one
:class:`~torchssm.audio.asr.CTCEnsemble` on the first run's task (:func:`load_for_decoding`; the runs must share
their sentences, :func:`check_same_sentences`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torchssm.audio.asr import (
    ASRConfig,
    CTCEnsemble,
    CTCRecognizer,
    SambaASR,
    SambaCTCHead,
    build_recognizer,
    check_warps,
    warped_members,
)


def _checkpoint_dir(path) -> Path:
    """A recogniser's checkpoint directory: ``path``, or its ``last`` when ``path`` is a run directory."""
    path = Path(path)
    return path / "last" if (path / "last").is_dir() else path


UNNAMED_TASK = "spoken_sentences"  # the task of a saved task section that names none


def saved_task_config(path, val_heldout: int | None = None) -> tuple[Path, dict]:
    """(checkpoint directory, a copy of the ``task`` section of its config, {} without one). ``val_heldout`` m (None:
    the run's own): its ``n_val_heldout`` set to m, a decoding's val with m sentences of held-out words for a run of
    ``spoken_sentences`` trained with another (val alone changes: :func:`~torchssm.audio.synthetic.sentence_texts`)."""
    from torchssm.train.checkpoint import read_checkpoint_state

    ckpt = _checkpoint_dir(path)
    task_cfg = dict((read_checkpoint_state(ckpt).get("config") or {}).get("task") or {})
    if val_heldout is None:
        return ckpt, task_cfg
    name = task_cfg.get("name", UNNAMED_TASK)
    if name != "spoken_sentences":
        raise ValueError(f"val_heldout re-draws the val split of spoken_sentences; {ckpt} was trained on {name}")
    return ckpt, task_cfg | {"n_val_heldout": val_heldout}


def checkpoint_task(path, data_dir=None, val_heldout: int | None = None):
    """(checkpoint directory, the task of its config rebuilt from the data cache) of a recogniser run
    (``val_heldout``: :func:`saved_task_config`'s)."""
    from torchssm.data.registry import build_task

    ckpt, task_cfg = saved_task_config(path, val_heldout)
    if not task_cfg:
        raise ValueError(f"{ckpt} has no task in its config: cannot rebuild its data")
    name = task_cfg.pop("name", UNNAMED_TASK)
    return ckpt, build_task(name, data_dir=data_dir, **task_cfg)


def load_recognizer(path) -> CTCRecognizer | SambaASR:
    """The recogniser saved by :func:`train_asr` at ``path`` (a checkpoint directory or its run directory)."""
    from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state

    path = _checkpoint_dir(path)
    state = read_checkpoint_state(path)
    config = state.get("config") or {}
    if "model" not in config or "kind" not in config["model"]:
        raise ValueError(f"{path} is not a speech recogniser checkpoint (no model.kind in its config)")
    model = build_recognizer(ASRConfig.from_dict(config["model"]))
    load_checkpoint(path, model)
    return model.eval()


def recognizer_kind(path) -> str:
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


def run_paths(path) -> list:
    """``[path]`` for one run directory or checkpoint, else the list of them ``path`` holds (ValueError if empty)."""
    if isinstance(path, (str, os.PathLike)):
        return [path]
    paths = list(path)
    if not paths:
        raise ValueError("expected a checkpoint or a list of CTC checkpoints, got an empty list")
    return paths


def load_for_decoding(
    path, data_dir=None, combine: str = "prob", warps: Sequence[float] = (1.0,), val_heldout: int | None = None
):
    """(checkpoint directory, task rebuilt from the data cache, model) for decoding ``path``: a run directory or
    checkpoint, or a list of CTC or hybrid Samba-ASR ones decoded as their :class:`~torchssm.audio.asr.CTCEnsemble`
    (``combine``, :func:`load_ctc_ensemble`) on the task of the first (its split and its training transcripts for
    the language model; the members should have been trained on the same sentences). ``warps`` other than (1,):
    each CTC recogniser read at each VTLP warp, the copies decoded as one ensemble (test-time warping,
    :func:`~torchssm.audio.asr.warped_members`), one run too. ``val_heldout``: the task's val re-drawn with that
    many sentences of held-out words (:func:`saved_task_config`)."""
    if isinstance(path, (str, os.PathLike)) and check_warps(warps) == (1.0,):
        ckpt, task = checkpoint_task(path, data_dir, val_heldout)
        return ckpt, task, load_recognizer(ckpt)
    paths = run_paths(path)
    check_same_sentences(paths)
    ckpt, task = checkpoint_task(paths[0], data_dir, val_heldout)
    return ckpt, task, load_ctc_ensemble(paths, combine, warps)


# task options that change only how the training sentences are spoken (voices, accents), not the sentences, val or test
TRAINING_VOICE_OPTIONS = ("voices_per_sentence", "extra_train_variants", "extra_train_accents", "accent_augment")


def _completed_task_config(path) -> dict:
    """The saved task section of the run at ``path`` with every option it leaves out at the builder's default."""
    from torchssm.data.registry import with_task_defaults

    cfg = saved_task_config(path)[1]
    return with_task_defaults({**cfg, "name": cfg.get("name", UNNAMED_TASK)})


def check_same_sentences(paths: Sequence) -> None:
    """ValueError unless the runs at ``paths`` were trained on one task: their saved task configs, completed with the
    task builder's defaults (:func:`~torchssm.data.registry.with_task_defaults`), equal but for
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


def load_ctc_ensemble(paths: Sequence, combine: str = "prob", warps: Sequence[float] = (1.0,)) -> CTCEnsemble:
    """The CTC recognisers saved at ``paths`` decoded as one (:class:`~torchssm.audio.asr.CTCEnsemble`); a hybrid
    Samba-ASR run joins by its CTC head (:class:`~torchssm.audio.asr.SambaCTCHead`), its decoder then rescores.
    ``warps``: each CTC recogniser read at each of these VTLP warps (:func:`~torchssm.audio.asr.warped_members`;
    a hybrid takes none but 1)."""
    members: list[CTCRecognizer | SambaCTCHead] = []
    for path in paths:
        model = load_recognizer(path)
        if isinstance(model, SambaASR) and not model.has_ctc:
            raise ValueError(
                f"{path} is a Samba-ASR run without a CTC head (model.ctc_weight 0): an ensemble combines CTC "
                "recognisers and hybrid Samba-ASR runs"
            )
        if isinstance(model, SambaASR) and check_warps(warps) != (1.0,):
            raise ValueError(f"{path} is a hybrid Samba-ASR run: test-time warps read CTC recognisers only")
        members.append(SambaCTCHead(model) if isinstance(model, SambaASR) else model)
    return CTCEnsemble(warped_members(members, warps), combine).eval()
