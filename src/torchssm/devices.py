"""Which torch device a ``--device`` / ``train.device`` string names, checked against this machine."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to ``torch.device``.

    A CUDA device that this machine does not have is a one-line ValueError, not a traceback from
    the first tensor moved there."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"device {spec!r}: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {spec!r} asked for, but {why}; use device 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
    return device
