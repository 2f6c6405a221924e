"""Shared set-up of the Triton kernel tests (ops/scan, ops/selective, ops/ssd).

``triton_device()`` at the top of a test module: "cuda" with a GPU; otherwise "cpu" with
TRITON_INTERPRET=1 (set here if tests/conftest.py has not, before Triton is first imported). It
skips the module when Triton is missing or was imported before the interpreter was switched on.

``ptx_stats(body)`` compiles kernels with the real Triton compiler to PTX for sm_80 (Ampere) in a
fresh interpreter without TRITON_INTERPRET: ``body`` (run with ``argv`` as sys.argv[1:]) uses
``build(fn, consts, ptr_types)`` and prints one JSON line, which is returned. Skips when Triton's
CUDA toolchain (ptxas) is unusable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def triton_device() -> str:
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    from torchssm.ops.scan import gpu

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not gpu.INTERPRET:
        pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)
    return device


_PRELUDE = r'''
import inspect, json
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget

def build(fn, consts, ptr_types):
    """PTX of a @triton.jit kernel for sm_80; pointers *fp32 unless named in ptr_types."""
    names = list(inspect.signature(fn.fn).parameters)
    sig, attrs = {}, {}
    for i, n in enumerate(names):  # what the JIT specialises at run time for 16-aligned shapes
        if n in consts:
            sig[n] = "constexpr"
        else:
            sig[n] = ptr_types.get(n, "*fp32") if n.endswith("_ptr") else "i32"
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 80, 32)).asm["ptx"]
'''


def ptx_stats(body: str, *argv: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + body, *argv], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 and ("ptxas" in proc.stderr or "nvidia" in proc.stderr.lower()):
        pytest.skip(f"Triton's CUDA toolchain is not usable here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
