"""Session-wide test set-up.

Without a GPU, the Triton kernels are tested on the CPU by Triton's interpreter, which reads
TRITON_INTERPRET when Triton is first imported: set it here, before any test module imports it, so
every module sees the same mode whatever the collection order.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
