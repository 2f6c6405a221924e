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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from torchssm.data.loaders import TensorDictDataset, iterate_batches
from torchssm.data.registry import TaskInfo

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
