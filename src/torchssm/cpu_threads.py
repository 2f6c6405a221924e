"""CPU thread counts of torch and numba (the compiled CPU kernels), set together and in the right order.

On a small CPU both pools compete: after a numba parallel region its idle workers slowed torch ops
~100x on a shared 2-core machine (BENCHMARKS.md), so training and benchmarks set both.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def get_cpu_threads() -> Tuple[int, Optional[int]]:
    """(torch intra-op threads, numba threads or None when numba is not installed)."""
    try:
        import numba
    except ImportError:
        return torch.get_num_threads(), None
    numba_threads = numba.get_num_threads()  # launches numba's threading layer now, see below
    return torch.get_num_threads(), numba_threads


def set_cpu_threads(torch_threads: int, numba_threads: Optional[int] = -1) -> None:
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
