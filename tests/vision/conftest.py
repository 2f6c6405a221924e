"""Vision tests run torch on one thread: their tensors are small, and on a shared 2-core machine a
second intra-op thread only spins (it made the overfit tests 30x slower in CPU time under load)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
