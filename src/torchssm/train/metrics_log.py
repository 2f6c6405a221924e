"""The run's metric records: ``<run>/metrics.jsonl`` always, TensorBoard event files on request.

One record per epoch (``{"epoch", "step", "lr", "train_loss", "train_acc", "val_loss", ...}``,
see :mod:`torchssm.train.epoch`) is appended to ``metrics.jsonl`` as one JSON line. With
``train.tensorboard`` (``torchssm train --tensorboard``) the same numbers go to
``<run>/tensorboard/`` as scalars, tagged with the record's own keys and plotted against the epoch,
so ``tensorboard --logdir runs/`` shows the curves while a run trains. A resumed run starts its
event file with TensorBoard's ``purge_step`` at the first epoch it redoes, so epochs that were
logged after the checkpoint and are now trained again are not shown twice.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from torchssm.fileio import atomic_write_text
from torchssm.runs import CONFIG_FILE, METRICS_FILE, TENSORBOARD_DIR


def require_tensorboard() -> None:
    """Fail early, in one line, when TensorBoard logging is asked for without the package."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "train.tensorboard (--tensorboard) needs the tensorboard package: pip install 'torchssm[tensorboard]'"
        )


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record, keyed as in ``metrics.jsonl`` (the epoch is the x axis)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class MetricsLog:
    """Writes a run's config and metric records (rank 0 only).

    Args:
        out_dir: the run directory (already claimed, :mod:`torchssm.train.run_dir`).
        history: the records of the epochs already done (a resumed run); ``metrics.jsonl`` is
            rewritten to hold exactly these before new records are appended.
        config: the experiment config dict, written to ``config.yaml``.
        tensorboard: also write TensorBoard scalars.
    """

    def __init__(self, out_dir: Path, history: list[dict], config: dict, *, tensorboard: bool = False):
        self.path = Path(out_dir) / METRICS_FILE
        lines = "".join(json.dumps(r) + "\n" for r in history)
        atomic_write_text(self.path, lines)
        config_text = yaml.safe_dump(config, sort_keys=False)
        atomic_write_text(Path(out_dir) / CONFIG_FILE, config_text)
        self.writer = None
        if tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            first_epoch = history[-1]["epoch"] + 1 if history else 1
            self.writer = SummaryWriter(log_dir=str(Path(out_dir) / TENSORBOARD_DIR), purge_step=first_epoch)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in scalars(record).items():
                self.writer.add_scalar(key, value, global_step=record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class NoLog:
    """The :class:`MetricsLog` of a rank that does not write (under ``torchrun``, ranks > 0)."""

    def append(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def open_metrics_log(
    main: bool, out_dir: Path, history: list[dict], config: dict, *, tensorboard: bool = False
) -> MetricsLog | NoLog:
    return MetricsLog(out_dir, history, config, tensorboard=tensorboard) if main else NoLog()
