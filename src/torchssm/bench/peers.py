"""``torchssm bench peers``: torchssm against the floor or the peer a user would pick, as interleaved ratios.

Each case is a few functions timed round-robin in one process (every repeat runs each function once, in
turn), so a load that changes during the run hits all of them alike; the result is the median CPU time
(``time.process_time``, summed over this process's threads) and its ratio to the case's reference.
Outputs are checked equal before timing. Cases (issue 20):

* ``s5``: S5 forward+backward at b=1, H = P = 256, L = 4096 against its two real GEMMs alone (the
  "GEMM floor": x (L, H) @ (H, P) and (L, P) @ (P, H), forward+backward) and against the earlier complex
  path (x cast to complex, complex GEMMs, ``.real`` of the readout).
* ``threads``: forward+backward of the S5, LRU, Mamba and Mamba-2 layers (b=4, l=1024, h=128), a training
  step (loss, backward) of the deep model of 3 S5 / Mamba / Mamba-2 blocks (b=4, l=512, h=128) and a GEMM,
  each with 1 and with 2 threads (torch and numba, :func:`torchssm.cpu_threads.set_cpu_threads`), ratios
  2 threads / 1 thread; read it with ``--clock wall`` (the thread policy in :mod:`torchssm.cpu_threads`
  comes from it).
* ``scan``: the narrow linear scan (1, 16384, 16) complex64 (time-varying a) against ``jax.lax.scan``
  (jit-compiled; skipped when jax is not installed), forward against jax's forward and forward+backward
  against ``jax.grad`` of it.
* Training (forward+backward of one layer, b=2, l=1024, d_model=256, loss = sum of the output) against the
  peer's pure-PyTorch layer with the same weights, with each one's peak memory during the step
  (:func:`torchssm.bench.common.peak_memory`, a separate profiled call after the timings):
  ``mamba2`` vs Hugging Face transformers' ``Mamba2Mixer`` (its pure-PyTorch path: the chunked SSD
  algorithm of ``mamba2_chunk_scan``; d_state 128, headdim 64, chunk 256, the Mamba-2 defaults);
  ``mamba`` vs mambapy's ``MambaBlock`` (its parallel ``pscan``; d_state 16); ``s5`` ... ``s5_pytorch``
  vs s5-pytorch's ``S5`` (H = P = 256, ZOH, no conjugate symmetry, which torchssm's S5 then matches
  exactly: ``conj_sym=False``). A peer that is not installed is skipped with a message (the ``bench``
  extra installs them). Generation against mambapy is ``torchssm bench generate --vs-mambapy``.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import torch

from torchssm.bench import common

# the functions to time and the reference of their ratios: one name, or one per function
Case = tuple[dict[str, Callable[[], object]], str | dict[str, str]]


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, clock: str = "cpu"
) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (``repeats`` rounds after ``warmup``);
    ``clock``: "cpu" (``time.process_time``, summed over threads) or "wall" (``time.perf_counter``)."""
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall'; got {clock!r}")
    now = time.process_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def case_s5(length: int = 4096, width: int = 256) -> Case:
    from torchssm.layers import S5
    from torchssm.ops.scan import linear_scan

    torch.manual_seed(0)
    layer = S5(width, width)
    m = layer.n_complex
    x = torch.randn(1, length, width, requires_grad=True)  # (b, l, H)

    def complex_path() -> torch.Tensor:  # the earlier S5 forward: complex cast, complex GEMMs, .real
        lam_bar, B_bar = layer._ssm_params()
        h = linear_scan(lam_bar, x.to(B_bar.dtype) @ B_bar.T)  # (b, l, m)
        return 2.0 * (h @ torch.view_as_complex(layer.C).T).real + layer.D * x

    w_in = torch.randn(width, 2 * m, requires_grad=True)  # (H, 2m)
    w_out = torch.randn(2 * m, width, requires_grad=True)  # (2m, H)
    torch.testing.assert_close(layer(x), complex_path(), rtol=1e-4, atol=1e-3)
    fns = {
        "gemm floor": lambda: ((x @ w_in) @ w_out).sum().backward(),
        "s5": lambda: layer(x).sum().backward(),
        "s5 complex (before)": lambda: complex_path().sum().backward(),
    }
    return fns, "gemm floor"


def case_scan(length: int = 16384, dim: int = 16) -> Case:
    from torchssm.ops.scan import linear_scan

    gen = torch.Generator().manual_seed(0)
    a = torch.polar(
        torch.rand(1, length, dim, generator=gen) * 0.5 + 0.49, torch.rand(1, length, dim, generator=gen)
    )  # (1, l, d) complex64, |a| < 1
    b = torch.randn(1, length, dim, dtype=torch.complex64, generator=gen)
    w = torch.randn(1, length, dim, generator=gen)  # loss weights: L = sum(w * Re h)
    a_g, b_g = a.clone().requires_grad_(), b.clone().requires_grad_()

    fns: dict[str, Callable[[], object]] = {
        "torchssm fwd": lambda: linear_scan(a, b),
        "torchssm fwd+bwd": lambda: (linear_scan(a_g, b_g).real * w).sum().backward(),
    }
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return fns, {name: name for name in fns}  # no peer: each its own reference

    def jscan(aj, bj):  # type: ignore[no-untyped-def]
        def step(h, ab):  # type: ignore[no-untyped-def]
            h = ab[0] * h + ab[1]
            return h, h

        return jax.lax.scan(step, jnp.zeros(aj.shape[1:], aj.dtype), (aj, bj))[1]

    aj, bj, wj = (jnp.asarray(t[0].numpy()) for t in (a, b, w))  # (l, d): scan over the leading axis
    fwd = jax.jit(jscan)
    grad = jax.jit(jax.grad(lambda aj, bj: jnp.sum(wj * jnp.real(jscan(aj, bj))), argnums=(0, 1)))
    torch.testing.assert_close(
        torch.from_numpy(jax.device_get(fwd(aj, bj)).copy()), linear_scan(a, b)[0], rtol=1e-4, atol=1e-4
    )
    fns["jax.lax.scan fwd"] = lambda: fwd(aj, bj).block_until_ready()
    fns["jax.lax.scan fwd+bwd"] = lambda: jax.block_until_ready(grad(aj, bj))
    # each function against jax's same work: forward vs forward, forward+backward vs forward+backward
    return fns, {name: "jax.lax.scan " + name.split(" ")[-1] for name in fns}


def _train_step(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: layer(x).sum().backward()


def _classify_step(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    return lambda: torch.nn.functional.cross_entropy(model(x), labels).backward()


def _with_threads(set_threads: Callable[[int], None], n: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        set_threads(n)
        return fn()

    return run


def case_threads(length: int = 1024, width: int = 128) -> Case:
    from torchssm.cpu_threads import set_cpu_threads
    from torchssm.layers import build_layer
    from torchssm.models.backbone import build_model
    from torchssm.models.config import ModelConfig

    torch.manual_seed(0)
    work: dict[str, Callable[[], object]] = {}
    for name in ("s5", "lru", "mamba", "mamba2"):
        layer = build_layer(name, width)
        x = torch.randn(4, length, width, requires_grad=True)  # (b, l, h)
        work[name] = _train_step(layer, x)
    for name in ("s5", "mamba", "mamba2"):  # a training step of the deep model: 3 residual blocks, loss, backward
        model = build_model(ModelConfig(layer=name, d_model=width, n_layers=3, d_input=width, d_output=10))
        x, labels = torch.randn(4, length // 2, width), torch.randint(0, 10, (4,))  # (b, l/2, h), (b,)
        work[f"{name} 3 layers"] = _classify_step(model, x, labels)
    w, xg = torch.randn(4 * width, 4 * width, requires_grad=True), torch.randn(4 * length, 4 * width)
    work["gemm"] = lambda: (xg @ w).sum().backward()
    fns: dict[str, Callable[[], object]] = {}
    for name, fn in work.items():
        for n in (1, 2):
            fns[f"{name} {n}t"] = _with_threads(set_cpu_threads, n, fn)
    return fns, {name: name[:-2] + "1t" for name in fns}  # 2 threads against 1


class PeerMissing(Exception):
    """A peer library is not installed: the case is skipped with this message."""


def _import_peer(module: str, package: str) -> ModuleType:
    """The peer's module, or PeerMissing naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PeerMissing(f"{package} is not installed ({err}); pip install torchssm[bench]") from None


def _train_pair(ours: torch.nn.Module, theirs: torch.nn.Module, shape: tuple[int, int, int], name: str) -> Case:
    """Forward+backward of both layers (same weights) on one x of ``shape`` (b, l, h), outputs checked equal first."""
    x = torch.randn(*shape, requires_grad=True)  # (b, l, h)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-3, atol=1e-3)
    return {"torchssm": _train_step(ours, x), name: _train_step(theirs, x)}, name


def case_mamba2(batch: int = 2, length: int = 1024, width: int = 256) -> Case:
    hf = _import_peer("transformers.models.mamba2.modeling_mamba2", "transformers")
    from transformers.utils import logging as hf_logging

    from torchssm.layers.mamba2 import Mamba2

    # the pure-PyTorch path is the one compared (module docstring): silence transformers' per-kernel notices
    # that it falls back to it because mamba_ssm / causal_conv1d (CUDA packages) are absent
    hf_logging.set_verbosity_error()

    torch.manual_seed(0)
    n, p, chunk = 128, 64, 256
    cfg = hf.Mamba2Config(
        hidden_size=width, num_heads=2 * width // p, head_dim=p, state_size=n, n_groups=1, expand=2,
        chunk_size=chunk, conv_kernel=4, layer_norm_epsilon=1e-5,
    )  # fmt: skip
    theirs = hf.Mamba2Mixer(cfg, layer_idx=0)
    ours = Mamba2(width, d_state=n, headdim=p, chunk_size=chunk, norm_eps=1e-5)
    ours.load_state_dict(theirs.state_dict())  # the same parameter names and shapes
    return _train_pair(ours, theirs, (batch, length, width), "hf Mamba2Mixer")


def case_mamba(batch: int = 2, length: int = 1024, width: int = 256) -> Case:
    mambapy = _import_peer("mambapy.mamba", "mambapy")
    from torchssm.layers.mamba import Mamba

    torch.manual_seed(0)
    cfg = mambapy.MambaConfig(d_model=width, n_layers=1, d_state=16, expand_factor=2, d_conv=4, pscan=True)
    theirs = mambapy.MambaBlock(cfg)
    ours = Mamba(width, d_state=16, expand=2, d_conv=4)
    ours.load_state_dict(theirs.state_dict())  # the same parameter names and shapes
    return _train_pair(ours, theirs, (batch, length, width), "mambapy MambaBlock")


def case_s5_pytorch(batch: int = 2, length: int = 1024, width: int = 256) -> Case:
    s5 = _import_peer("s5", "s5-pytorch")
    from torchssm.layers import S5

    torch.manual_seed(0)
    theirs = s5.S5(width, width)  # H = P = width, dense B/C, ZOH
    ours = S5(width, width, conj_sym=False)
    seq = theirs.seq
    with torch.no_grad():
        ours.Lambda_re.copy_(seq.Lambda.real)
        ours.Lambda_im.copy_(seq.Lambda.imag)
        ours.B.copy_(seq.B)  # (P, H, 2)
        ours.C.copy_(torch.view_as_real(seq.C))  # (H, P) complex -> (H, P, 2)
        ours.D.copy_(seq.D)
        ours.log_step.copy_(seq.log_step)
    return _train_pair(ours, theirs, (batch, length, width), "s5-pytorch S5")


CASES: dict[str, Callable[[], Case]] = {
    "s5": case_s5,
    "scan": case_scan,
    "threads": case_threads,
    "mamba2": case_mamba2,
    "mamba": case_mamba,
    "s5_pytorch": case_s5_pytorch,
}
_PEAK_MEMORY = ("mamba2", "mamba", "s5_pytorch")  # training cases: also each function's peak memory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cases", nargs="*", default=list(CASES), help=f"cases to run (default all): {list(CASES)}")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to run each case at")
    p.add_argument("--repeats", type=int, default=9, help="interleaved rounds (median reported)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="CPU time (default) or wall time")
    p.add_argument("--json", help="write the environment and all results to this JSON file")


def run(args: argparse.Namespace) -> int:
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; expected some of {list(CASES)}")
    env = common.environment(torch.device("cpu"))
    print(f"# {env}")
    results = []
    for case in args.cases:
        for n in [1] if case == "threads" else args.threads:  # "threads" sets its own counts
            with common.threads(n):
                try:
                    fns, ref = CASES[case]()
                except PeerMissing as err:
                    print(f"{case:7s} skipped: {err}")
                    break
                med = interleaved(fns, args.repeats, clock=args.clock)
                peak = {}
                if case in _PEAK_MEMORY:  # one profiled call each, after the timings
                    peak = {k: common.peak_memory(f, torch.device("cpu"))[0] for k, f in fns.items()}
            for name, t in med.items():
                r = ref if isinstance(ref, str) else ref[name]
                row = {"case": case, "threads": n, "fn": name, "ms": t * 1e3, "ratio": t / med[r], "reference": r}
                mem = ""
                if case in _PEAK_MEMORY:
                    row["peak_mb"] = peak[name] / 2**20
                    mem = f"  peak {row['peak_mb']:7.1f} MB ({peak[name] / peak[r]:.2f}x)"
                results.append(row)
                print(f"{case:7s} {n}t  {name:22s} {t * 1e3:9.2f} ms {args.clock}  {t / med[r]:5.2f}x {r}{mem}")
    if args.json:
        common.save_json(
            args.json, {"environment": env, "repeats": args.repeats, "clock": args.clock, "results": results}
        )
    return 0
