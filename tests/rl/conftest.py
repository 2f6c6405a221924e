"""RL tests run on one thread of torch and numba (cpu_threads.py: idle numba workers slow torch ops ~100x
on a loaded 2-core machine; the learning test took 417 s instead of 5 s without this)."""

import pytest

from torchssm.cpu_threads import get_cpu_threads, set_cpu_threads


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    torch_threads, numba_threads = get_cpu_threads()
    set_cpu_threads(1, 1)
    yield
    set_cpu_threads(torch_threads, numba_threads)
