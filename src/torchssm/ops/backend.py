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

# compiled backends: name -> (device type, library, install command, the alternatives to suggest)
_REQUIRES = {
    "gpu": ("cuda", "Triton", "pip install torchssm[gpu]", "'auto', 'cpu' or 'chunked'"),
    "cpu": ("cpu", "numba", "pip install numba", "'auto', 'gpu' or 'chunked'"),
}

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


def check_backend_name(name: str) -> None:
    """Raise ValueError naming the valid backends unless ``name`` is one of them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(repr(b) for b in BACKENDS)}")


def resolve_backend(name: str, tensor: torch.Tensor, *, package: str = "torchssm.ops.scan") -> ModuleType:
    """Return the backend module of ``package`` named ``name`` (or chosen by "auto") for ``tensor``'s device.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones), or "gpu"/"cpu" for a tensor on
            another device.
        ImportError: "gpu" without Triton (``pip install torchssm[gpu]``), "cpu" without numba.
    """
    check_backend_name(name)
    device = tensor.device.type
    if name == "auto":
        if device == "cuda" and tensor.dtype not in _GPU_UNSUPPORTED and _available(package, "gpu"):
            return _import(package, "gpu")
        if device == "cpu" and _available(package, "cpu"):
            return _import(package, "cpu")
        return _import(package, "chunked")
    if name in _REQUIRES:
        needed_device, library, install, others = _REQUIRES[name]
        if device != needed_device:
            raise ValueError(f"backend={name!r} ({library}) needs {needed_device.upper()} tensors; got a tensor on "
                             f"{tensor.device}. Use backend={others}.")
        try:
            return _import(package, name)
        except ImportError as err:
            raise ImportError(f"backend={name!r} needs {library}, which failed to import ({err}); "
                              f"install it with `{install}`") from err
    return _import(package, name)
