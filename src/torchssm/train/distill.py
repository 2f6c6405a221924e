"""Knowledge distillation: a student trained on its labels and on the soft targets of trained teachers.

Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a Neural Network", Sec. 2): the teachers'
logits z, averaged over an ensemble, are softened by a temperature T and the student's logits s are
trained towards them as well as towards the labels y::

    loss = (1 - w) * CE(s, y) + w * T^2 * KL(softmax(z / T) || softmax(s / T))

The T^2 keeps the soft term's gradients on the scale of the hard term's when T changes (Sec. 2).
The ensemble's soft target is ``softmax(mean_k z_k / T)``, the normalised geometric mean of the
teachers' tempered distributions (Sec. 2 allows the arithmetic or the geometric mean; the mean of the
logits is also what ``audio.kws.ensemble_accuracy`` scores).

``torchssm train --set "train.distill_from=[runs/a, runs/b]"`` (``train.distill_temperature``,
``train.distill_weight``): before the first step the teachers (checkpoint or run directories trained on
the same task) score every training example once, in eval mode, and the mean logits travel with the
examples as ``batch["teacher_logits"]`` (b, c); validation and test losses stay the plain
cross-entropy, so they compare with any run's. Classification tasks only.

``train.distill_cache=DIR`` keeps those mean logits in ``DIR/teacher_logits_<key>.safetensors``, the key
a digest of the teachers' weights (in order) and the training tensors, so that several students of the
same teachers and data score them once (:func:`cached_teacher_logits`). The transfer set of Sec. 2 is
the student's training set: a task option that adds examples the teachers never saw (e.g. more clips)
gives one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from torchssm.data.loaders import TensorDictDataset, iterate_batches
from torchssm.data.registry import TaskInfo
from torchssm.fileio import atomic_write

TEACHER_KEY = "teacher_logits"


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), the mean over the batch.

    student, teacher: logits (b, c)."""
    if student.shape != teacher.shape:
        raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match the student's {tuple(student.shape)}")
    log_q = F.log_softmax(student.float() / temperature, dim=-1)  # (b, c) the student's tempered distribution
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)  # (b, c) the teachers'
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


class WithTeacherLogits(Dataset):
    """``dataset``'s items with ``teacher_logits`` (c,) added: item i gets ``logits[i]``."""

    def __init__(self, dataset: Dataset, logits: torch.Tensor):
        if len(dataset) != len(logits):  # type: ignore[arg-type]
            raise ValueError(f"{len(logits)} teacher logits for {len(dataset)} examples")  # type: ignore[arg-type]
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index):
        return {**self.dataset[index], TEACHER_KEY: self.logits[index]}


def with_teacher_logits(dataset: Dataset, logits: torch.Tensor) -> Dataset:
    """``dataset`` whose batches carry ``teacher_logits``; a :class:`TensorDictDataset` stays one (sliced
    directly by :func:`iterate_batches`)."""
    if isinstance(dataset, TensorDictDataset):
        if len(dataset) != len(logits):
            raise ValueError(f"{len(logits)} teacher logits for {len(dataset)} examples")
        return TensorDictDataset(**dataset.tensors, **{TEACHER_KEY: logits})
    return WithTeacherLogits(dataset, logits)


@torch.no_grad()
def teacher_logits(
    teachers: Sequence[str],
    dataset: Dataset,
    info: TaskInfo,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """The mean over ``teachers`` (checkpoint or run directories of ``torchssm train`` runs of the task
    ``info.name``) of their logits (n, c) for every example of ``dataset``, each model in eval mode.

    The teachers' architectures are read from their checkpoints and built for ``info``'s shapes; their
    own training data is not rebuilt."""
    from torchssm.models import build_model
    from torchssm.train.checkpoint import load_checkpoint
    from torchssm.train.config import model_config_for_task
    from torchssm.train.losses import batch_to, forward_batch  # losses imports this module
    from torchssm.train.reload import read_run_config

    if info.kind != "classification":
        raise ValueError(f"train.distill_from needs a classification task; {info.name} is {info.kind!r}")
    if not teachers:
        raise ValueError("expected at least one teacher checkpoint")
    total: torch.Tensor | None = None
    started = time.process_time()
    for teacher in teachers:
        path, _, config = read_run_config(teacher)
        if config.task_name != info.name:
            raise ValueError(f"teacher {path} was trained on task {config.task_name!r}; the student's is {info.name!r}")
        model = build_model(model_config_for_task(config.model, info)).to(device)
        load_checkpoint(path, model, map_location=device)
        model.eval()
        parts = []
        batches = iterate_batches(dataset, batch_size)
        for batch in tqdm(batches, desc=f"teacher {path}", leave=False, disable=None):
            logits = forward_batch(model, batch_to(batch, torch.device(device))).float()  # (b, c)
            if logits.dim() != 2 or logits.shape[-1] != info.d_output:
                raise ValueError(f"teacher {path} gives logits {tuple(logits.shape)}, expected (b, {info.d_output})")
            parts.append(logits.cpu())
        scores = torch.cat(parts)  # (n, c)
        total = scores if total is None else total + scores
    assert total is not None
    log(
        f"distillation: {len(teachers)} teacher(s) scored {len(total)} training examples "
        f"({time.process_time() - started:.0f} CPU-s)"
    )
    return total / len(teachers)


def soft_target_key(teachers: Sequence[str], dataset: Dataset, info: TaskInfo) -> str:
    """The first 16 hex digits of a sha256 over what the teachers' mean logits depend on: the task's name,
    each teacher's weights (the sha256 its checkpoint records, verified when read), in order, and every
    tensor of ``dataset`` (name, dtype, shape, bytes). ``dataset`` must hold its examples in tensors."""
    from torchssm.train.checkpoint import WEIGHTS
    from torchssm.train.reload import read_run_config

    if not isinstance(dataset, TensorDictDataset):
        raise ValueError(f"train.distill_cache needs a training set held in tensors; {type(dataset).__name__} is not")
    weights = []
    for teacher in teachers:
        path, state, _ = read_run_config(teacher)
        digest = state.get("files", {}).get(WEIGHTS)
        if not digest:
            raise ValueError(f"{path} records no sha256 of its weights; train.distill_cache cannot key it")
        weights.append(digest)
    h = hashlib.sha256(json.dumps({"task": info.name, "teachers": weights}).encode())
    for name in sorted(dataset.tensors):
        t = dataset.tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the raw bytes, without a copy
    return h.hexdigest()[:16]


def cached_teacher_logits(
    teachers: Sequence[str],
    dataset: Dataset,
    info: TaskInfo,
    cache_dir: str | Path,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """:func:`teacher_logits`, read from ``cache_dir`` when an earlier call kept them for the same teachers
    and data (:func:`soft_target_key`), else computed and kept there (written atomically)."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"teacher_logits_{soft_target_key(teachers, dataset, info)}.safetensors"
    expected = (len(dataset), info.d_output)  # type: ignore[arg-type]
    if path.is_file():
        try:
            logits = load_file(str(path))["logits"]
        except Exception as err:  # a foreign or damaged file: say which, do not guess
            raise ValueError(f"cannot read cached teacher logits {path} ({err}); delete it") from None
        if tuple(logits.shape) != expected:
            raise ValueError(f"{path} holds logits {tuple(logits.shape)}, expected {expected}; delete it")
        log(f"distillation: {len(teachers)} teacher(s)' logits of {len(logits)} training examples read from {path}")
        return logits
    logits = teacher_logits(teachers, dataset, info, batch_size=batch_size, device=device, log=log)
    atomic_write(path, lambda tmp: save_file({"logits": logits.contiguous()}, tmp))
    log(f"distillation: teacher logits kept at {path}")
    return logits
