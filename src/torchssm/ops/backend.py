"""The one backend dispatcher of every op: linear scan, fused LRU scan, selective scan (S6) and SSD.

Every op takes ``backend=`` with the same five names, meaning the same thing everywhere:

    "naive"    the op's plain reference loop, differentiated by autograd (slow: tests, benchmarks)
    "chunked"  the op's plain-PyTorch parallel algorithm, any device (no compiled code)
    "cpu"      the op's fused numba kernel: CPU tensors, needs numba (an op without one refuses it)
    "gpu"      the op's fused Triton kernels: CUDA tensors (or CPU tensors under TRITON_INTERPRET=1,
               for tests), needs Triton (``pip install torchssm[gpu]``)
    "auto"     chosen per op, device and compute dtype by the table below

``auto`` (each compiled choice falls back to "chunked" when numba / Triton does not import):

    op               CUDA, 32/16-bit   CUDA, float64   CPU, float32   CPU, float64   other devices
    linear_scan      gpu               chunked         cpu            cpu            chunked
    lru_scan         gpu               chunked         cpu            cpu            chunked
    selective_scan   gpu               chunked         cpu            chunked        chunked
    ssd              gpu               chunked         cpu            cpu            chunked

The Triton kernels accumulate in float32, so no float64/complex128 goes to them. The selective
scan's fused CPU kernel wins in float32 only (1.4-2.3x faster forward+backward than "chunked" at
Mamba shapes; 1.2-1.3x slower in float64 with libm exp: docs/selective.md, BENCHMARKS.md). SSD's
fused CPU kernel computes one exp per step and head, and wins in both (forward+backward 0.2-0.7x the
time of "chunked" in float32 and float64: BENCHMARKS.md). ``lru_scan``'s "cpu" and "chunked" are the
linear scan's, run on lambda.

    choose_backend(op, name, like, dtype=None) -> "naive" | "chunked" | "cpu" | "gpu"
    load_kernel(op, backend)                   -> the op's compiled kernel ("cpu" or "gpu")
    resolve_backend(name, tensor)              -> the linear scan's backend module (its primitive)

Kernels are imported lazily: numba only for CPU tensors and Triton only for CUDA tensors (or under
the interpreter), so a CPU-only install never touches Triton and importing torchssm stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

BACKENDS = ("auto", "naive", "chunked", "cpu", "gpu")

_GPU_UNSUPPORTED = (torch.float64, torch.complex128)  # the Triton kernels accumulate in float32

# compiled backends: name -> (device type, library, install command)
_REQUIRES = {
    "gpu": ("cuda", "Triton", "pip install torchssm[gpu]"),
    "cpu": ("cpu", "numba", "pip install numba"),
}


@dataclass(frozen=True)
class OpKernels:
    """Where one op's compiled kernels live ("module" or "module:function"; None: the op has none)
    and the compute dtypes for which "auto" picks the CPU kernel (None: every dtype)."""

    cpu: str | None
    gpu: str | None
    cpu_auto_dtypes: tuple[torch.dtype, ...] | None = None


# The dispatcher's table: the compiled kernels of every op ("naive" and "chunked" are plain PyTorch
# in the op's own package and always available).
OPS: dict[str, OpKernels] = {
    # the scan primitive: modules with linear_scan_forward (and, fused, linear_scan_backward)
    "linear_scan": OpKernels(cpu="torchssm.ops.scan.cpu", gpu="torchssm.ops.scan.gpu"),
    "lru_scan": OpKernels(cpu="torchssm.ops.scan.cpu", gpu="torchssm.ops.scan.gpu:lru_scan"),
    "selective_scan": OpKernels(
        cpu="torchssm.ops.selective.cpu:selective_scan_cpu",
        gpu="torchssm.ops.selective.gpu:selective_scan_gpu",
        cpu_auto_dtypes=(torch.float32,),
    ),
    "ssd": OpKernels(cpu="torchssm.ops.ssd.cpu:ssd_cpu", gpu="torchssm.ops.ssd.gpu:ssd_gpu"),
    # SSD with method="chunked": the chunked matmul form of the Triton kernels
    "ssd_chunked": OpKernels(cpu=None, gpu="torchssm.ops.ssd.gpu_chunked:ssd_chunked_gpu"),
}

# module -> the module, or the ImportError it raised (a broken numba is slow to retry). A dict, not
# importlib on every call: torch.compile traces the dispatch (a lookup) but not importlib.
_cache: dict[str, ModuleType | ImportError] = {}


def _import(module: str) -> ModuleType:
    if module not in _cache:
        try:
            _cache[module] = importlib.import_module(module)
        except ImportError as err:  # optional dependency (numba, triton) missing or broken
            _cache[module] = err
    found = _cache[module]
    if isinstance(found, ImportError):
        raise found
    return found


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    found = _import(module)
    return getattr(found, attr) if attr else found


def _available(spec: str) -> bool:
    try:
        _load(spec)
    except ImportError:
        return False
    return True


def triton_interpreter() -> bool:
    """True when Triton runs in its CPU interpreter (TRITON_INTERPRET=1 read when the kernels were
    imported): then "gpu" also takes CPU tensors."""
    try:
        return bool(_import("torchssm.ops.scan.gpu").INTERPRET)
    except ImportError:
        return False


def check_backend_name(name: str) -> None:
    """Raise ValueError naming the valid backends unless ``name`` is one of them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(repr(b) for b in BACKENDS)}")


def _kernels(op: str) -> OpKernels:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
    return OPS[op]


def choose_backend(op: str, name: str, like: torch.Tensor, *, dtype: torch.dtype | None = None) -> str:
    """The backend ``op`` runs for ``name`` on ``like``'s device: ``name`` itself after checking that it
    exists for the op and takes that device, or the choice of "auto" (module docstring table).

    ``dtype``: the compute dtype "auto" decides by (default ``like.dtype``).
    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones), a compiled backend the op does
            not have, or "cpu"/"gpu" for a tensor on another device.
        ImportError: "gpu" without Triton (``pip install torchssm[gpu]``), "cpu" without numba.
    """
    check_backend_name(name)
    kernels = _kernels(op)
    device = like.device.type
    dtype = like.dtype if dtype is None else dtype
    if name == "auto":
        if device == "cuda" and dtype not in _GPU_UNSUPPORTED and kernels.gpu and _available(kernels.gpu):
            return "gpu"
        wants_cpu = kernels.cpu_auto_dtypes is None or dtype in kernels.cpu_auto_dtypes
        if device == "cpu" and kernels.cpu and wants_cpu and _available(kernels.cpu):
            return "cpu"
        return "chunked"
    if name in _REQUIRES:
        load_kernel(op, name)  # the library first: without Triton, a CUDA tensor's error names the extra
        needed_device, library, _ = _REQUIRES[name]
        if device != needed_device and not (name == "gpu" and triton_interpreter()):
            others = "'auto', " + ("'cpu'" if name == "gpu" else "'gpu'") + " or 'chunked'"
            raise ValueError(
                f"backend={name!r} ({library}) needs {needed_device.upper()} tensors; got a tensor on "
                f"{like.device}. Use backend={others}."
            )
    return name


def load_kernel(op: str, backend: str) -> Any:
    """The compiled kernel of ``op`` for ``backend`` ("cpu" or "gpu"): a function, or for "linear_scan" the
    module of its primitive. Raises ValueError if the op has none, ImportError naming the install command
    if its library does not import."""
    if backend not in _REQUIRES:
        raise ValueError(f"load_kernel takes 'cpu' or 'gpu'; got {backend!r}")
    spec = getattr(_kernels(op), backend)
    _, library, install = _REQUIRES[backend]
    if spec is None:
        have = [b for b in BACKENDS if b not in _REQUIRES or getattr(OPS[op], b) is not None]
        raise ValueError(
            f"{op} has no {backend!r} backend (no {library} kernel); expected one of {', '.join(map(repr, have))}"
        )
    try:
        return _load(spec)
    except ImportError as err:
        raise ImportError(
            f"backend={backend!r} needs {library}, which failed to import ({err}); install it with `{install}`"
        ) from err


_SCAN_PLAIN = {"naive": "torchssm.ops.scan.naive", "chunked": "torchssm.ops.scan.chunked"}


def resolve_backend(name: str, tensor: torch.Tensor) -> ModuleType:
    """The linear scan's backend module (with ``linear_scan_forward``) for ``name`` on ``tensor``'s device.

    Raises as :func:`choose_backend`.
    """
    chosen = choose_backend("linear_scan", name, tensor)
    return load_kernel("linear_scan", chosen) if chosen in _REQUIRES else _import(_SCAN_PLAIN[chosen])
