"""CPU thread counts of torch and numba (the compiled CPU kernels), set together and in the right order.

On a small CPU both pools compete: after a numba parallel region its idle workers slowed torch ops
~100x on a shared 2-core machine (BENCHMARKS.md), so training and benchmarks set both.

Thread policy (:func:`auto_cpu_threads`): one thread per core that the other processes leave idle
(cores usable by this process minus the 1-minute load average), at least 1. Training uses it when
``train.threads`` is 0 (the default; a number overrides it). Measured (BENCHMARKS.md, ``torchssm bench
peers threads --clock wall``, 2-core machine at load average 7-33): 2 threads ran the forward+backward of
S5, LRU, Mamba and Mamba-2 layers 2.2-12x slower in wall time than 1 thread, the training step of
3-block S5 / Mamba / Mamba-2 models 8-16x slower, and even a plain GEMM 1.15-1.35x slower; so on a busy
machine the policy gives 1. On an idle machine it gives every core (torch's own default), which was not
measured here (no idle machine).
"""

from __future__ import annotations

import os

import torch


def get_cpu_threads() -> tuple[int, int | None]:
    """(torch intra-op threads, numba threads or None when numba is not installed)."""
    try:
        import numba
    except ImportError:
        return torch.get_num_threads(), None
    numba_threads = numba.get_num_threads()  # launches numba's threading layer now, see below
    return torch.get_num_threads(), numba_threads


def set_cpu_threads(torch_threads: int, numba_threads: int | None = -1) -> None:
    """Threads of torch and of numba (the compiled CPU scans); ``numba_threads=-1``: same as torch.

    numba first: launching numba's OpenMP threading layer (its first parallel call) resets the
    process's shared OpenMP thread count, which torch reads, so a ``torch.set_num_threads`` made
    before it is silently undone mid-run (2 threads instead of 1 from the first scan on: slower on a
    shared CPU, and a resumed run would compute with other settings than the original one).
    """
    if numba_threads is not None:
        try:
            import numba
        except ImportError:
            pass
        else:
            n = torch_threads if numba_threads == -1 else numba_threads
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    torch.set_num_threads(torch_threads)


def auto_cpu_threads(load: float | None = None, cores: int | None = None) -> int:
    """The default thread count (see the module docstring): max(1, cores - load), rounded down.

    ``cores``: CPUs this process may run on (``os.sched_getaffinity``); ``load``: the 1-minute load
    average (``os.getloadavg``), i.e. runnable threads of all processes. Both can be given (tests).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform: assume an idle machine
            load = 0.0
    if cores < 1 or load < 0:
        raise ValueError(f"cores must be >= 1 and load >= 0; got cores={cores}, load={load}")
    return max(1, min(cores, int(cores - load)))
