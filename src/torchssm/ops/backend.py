"""One dispatcher for every op's implementations: backend="auto" | "naive" | "chunked" | "cpu" | "gpu".

    resolve_backend("auto", tensor)    -> the module implementing the op's backend primitive

``auto`` picks, for the device (and dtype) of ``tensor``:
    CUDA: "gpu" (Triton kernels) when triton imports, else "chunked"; also "chunked" for float64 and
          complex128, which the Triton kernels (float32 accumulation) do not take;
    CPU:  "cpu" (numba-compiled loop) when numba imports, else "chunked";
    other devices (MPS, XPU, ...): "chunked" (plain PyTorch).
Imports are lazy: numba is only imported for CPU tensors and Triton only for CUDA tensors, so a
CPU-only install never touches Triton and importing torchssm stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

BACKENDS = ("auto", "naive", "chunked", "cpu", "gpu")

_GPU_UNSUPPORTED = (torch.float64, torch.complex128)  # the Triton kernels accumulate in float32

_cache: dict = {}  # (op package, backend) -> module, or the ImportError raised while importing it


def _import(package: str, name: str) -> ModuleType:
    key = (package, name)
    if key not in _cache:
        try:
            _cache[key] = importlib.import_module(f"{package}.{name}")  # e.g. torchssm.ops.scan.cpu
        except ImportError as err:  # optional dependency (numba, triton) missing or broken
            _cache[key] = err
    found = _cache[key]
    if isinstance(found, ImportError):
        raise found
    return found


def _available(package: str, name: str) -> bool:
    try:
        _import(package, name)
    except ImportError:
        return False
    return True


def resolve_backend(name: str, tensor: torch.Tensor, *, package: str = "torchssm.ops.scan") -> ModuleType:
    """Return the backend module of ``package`` named ``name`` (or chosen by "auto") for ``tensor``'s device.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones), or "gpu"/"cpu" for a tensor on
            another device.
        ImportError: "gpu" without Triton (``pip install torchssm[gpu]``), "cpu" without numba.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(repr(b) for b in BACKENDS)}")
    device = tensor.device.type
    if name == "auto":
        if device == "cuda" and tensor.dtype not in _GPU_UNSUPPORTED and _available(package, "gpu"):
            return _import(package, "gpu")
        if device == "cpu" and _available(package, "cpu"):
            return _import(package, "cpu")
        return _import(package, "chunked")
    if name == "gpu":
        if device != "cuda":
            raise ValueError(f"backend='gpu' (Triton) needs CUDA tensors; got a tensor on {tensor.device}. "
                             "Use backend='auto', 'cpu' or 'chunked'.")
        try:
            return _import(package, "gpu")
        except ImportError as err:
            raise ImportError(f"backend='gpu' needs Triton, which failed to import ({err}); "
                              "install it with `pip install torchssm[gpu]`") from err
    if name == "cpu":
        if device != "cpu":
            raise ValueError(f"backend='cpu' (numba) needs CPU tensors; got a tensor on {tensor.device}. "
                             "Use backend='auto', 'gpu' or 'chunked'.")
        try:
            return _import(package, "cpu")
        except ImportError as err:
            raise ImportError(f"backend='cpu' needs numba, which failed to import ({err}); "
                              "install it with `pip install numba`") from err
    return _import(package, name)
