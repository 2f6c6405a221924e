"""``torchssm bench kernels``: the Triton scan kernels as a fraction of the device's copy bandwidth.

The linear scan is memory-bound: its floor is (bytes read + bytes written) / HBM bandwidth. For each
shape (B, L, D) and dtype this measures, in one run:

* ``copy``: ``b.clone()`` (reads and writes B L D elements): bandwidth_copy = 2 |b| / t_copy;
* ``scan fwd``: ``gpu.linear_scan_forward(a, b)``: reads a and b, writes h;
* ``scan bwd``: ``gpu.linear_scan_backward(a, h, None, grad_h)``: reads a, h, grad_h, writes
  grad_a and grad_b (the shifted re-reads of a and h hit the cache and are not counted);
  where :func:`~torchssm.ops.scan.gpu.auto_chunks` splits the sequence (narrow shapes), both
  rows are also given without the split (``chunks=1``); bytes count each tensor once, so the
  split's second read of a and b shows as a lower fraction;
* ``lru fused`` / ``lru unfused`` (complex64 only): the LRU recurrence with lambda and gamma built
  in-kernel from (nu_log, theta_log, gamma_log) vs lambda built in PyTorch and gamma * Bu
  materialised before the scan;
* peers that a user would pick instead, when they run here: ``chunked`` (the plain PyTorch
  backend) and ``chunked+compile`` (the same under ``torch.compile``);
* with ``--ops``: the selective scan (Mamba) and SSD (Mamba-2) kernels vs the chunked PyTorch
  backends, forward and forward+backward times and tokens/s (compute- and memory-bound mixes,
  so no bandwidth fraction); SSD also by the Triton chunked-matmul kernels (IEEE float32 and TF32
  dots; their backward is Triton too, see ops/ssd/gpu_chunked.py).

Each row prints the median time [min, max] over ``--repeats`` after one warm-up call (which also
autotunes the Triton kernels), the bytes it moves, its bandwidth and ``vs copy`` =
bandwidth / bandwidth_copy, the fraction of the measured bound (docs/architecture.md, Numerics:
speed is shown by benchmarks, not asserted). ``bfloat16`` means a, b and h in bf16 (float32 state inside the kernel).

Defaults: the issue's reference shape (8, 4096, 1536) and a narrow one (8, 4096, 64), float32,
complex64 and bfloat16. Needs CUDA; on the CPU it runs only under TRITON_INTERPRET=1 at tiny
shapes (a smoke test of this code, not a timing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from torchssm.bench import common

DEFAULT_SHAPES = "8x4096x1536,8x4096x64"
KERNEL_DTYPES = {"float32": torch.float32, "complex64": torch.complex64, "bfloat16": torch.bfloat16}


def add_arguments(p) -> None:
    p.add_argument("--device", default="cuda", help="cuda | cuda:1 ... (cpu only under TRITON_INTERPRET=1)")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated BxLxD (default {DEFAULT_SHAPES})")
    p.add_argument("--dtypes", default="float32,complex64,bfloat16", help="from " + ", ".join(KERNEL_DTYPES))
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (default 20)")
    p.add_argument("--a-dim", action="store_true", help="time-invariant a of shape (D,) instead of (B, L, D)")
    p.add_argument("--no-peers", action="store_true", help="skip the chunked / torch.compile peers")
    p.add_argument(
        "--ops",
        action="store_true",
        help="also time the selective scan and SSD kernels (forward and forward+backward) against the PyTorch backends",
    )
    p.add_argument("--selective-shape", default="8x2048x1536x16", help="BxLxDxN for --ops (Mamba-1 sizes)")
    p.add_argument("--ssd-shape", default="8x2048x24x64x128", help="BxLxHxPxN for --ops (Mamba-2 sizes, 1 group)")
    p.add_argument("--json", help="write the environment and all results to this JSON file")


def _inputs(shape, dtype, device, a_dim: bool):
    """a with |a| in [0.5, 0.999) (random phase if complex), b ~ N(0, 1)."""
    from torchssm.bench.scan import make_inputs

    if dtype == torch.bfloat16:
        a, b = make_inputs(shape, torch.float32, device, a_dim=a_dim, seed=0)
        return a.bfloat16(), b.bfloat16()
    return make_inputs(shape, dtype, device, a_dim=a_dim, seed=0)


def _nbytes(*ts: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _row(name: str, fn: Callable[[], object], nbytes: int, device, repeats: int, copy_bw: float):
    t = common.time_fn(fn, device, repeats=repeats)
    bw = nbytes / t["median"]
    return {
        "kernel": name,
        "ms": t["median"] * 1e3,
        "min_ms": t["min"] * 1e3,
        "max_ms": t["max"] * 1e3,
        "MB": nbytes / 1e6,
        "GB/s": bw / 1e9,
        "vs copy": bw / copy_bw,
    }


def _measure(shape, dtype, device, args) -> list[dict[str, object]]:
    from torchssm.ops.scan import chunked, gpu

    a, b = _inputs(shape, dtype, device, args.a_dim)
    rows = []
    copy = common.time_fn(lambda: b.clone(), device, repeats=args.repeats)
    copy_bw = 2 * _nbytes(b) / copy["median"]
    rows.append(
        {
            "kernel": "copy (b.clone)",
            "ms": copy["median"] * 1e3,
            "min_ms": copy["min"] * 1e3,
            "max_ms": copy["max"] * 1e3,
            "MB": 2 * _nbytes(b) / 1e6,
            "GB/s": copy_bw / 1e9,
            "vs copy": 1.0,
        }
    )
    with torch.no_grad():
        h = gpu.linear_scan_forward(a, b)
        grad_h = torch.randn_like(h)
        grad_a_bytes = _nbytes(a) if a.dim() == 3 else 0
        auto = gpu.auto_chunks(*shape, device)
        for chunks in sorted({auto, 1}, reverse=True):  # the default, and without the split if it differs
            tag = f" (chunks={chunks})" if auto > 1 else ""
            rows.append(
                _row(
                    "scan fwd" + tag,
                    lambda c=chunks: gpu.linear_scan_forward(a, b, chunks=c),
                    _nbytes(a, b, h),
                    device,
                    args.repeats,
                    copy_bw,
                )
            )
            rows.append(
                _row(
                    "scan bwd" + tag,
                    lambda c=chunks: gpu.linear_scan_backward(a, h, None, grad_h, chunks=c),
                    _nbytes(a, h, grad_h, b) + grad_a_bytes,
                    device,
                    args.repeats,
                    copy_bw,
                )
            )
        if dtype == torch.complex64:
            dim = shape[2]
            r = 0.5 + 0.499 * torch.rand(dim, device=device)
            nu_log, theta_log = torch.log(-torch.log(r)), torch.log(6.28 * torch.rand(dim, device=device))
            gamma_log = 0.5 * torch.log(1 - r**2)
            rows.append(
                _row(
                    "lru fused",
                    lambda: gpu.lru_scan(nu_log, theta_log, gamma_log, b),
                    _nbytes(b, h),
                    device,
                    args.repeats,
                    copy_bw,
                )
            )

            def lru_unfused():
                lam = torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))  # (D,)
                return gpu.linear_scan_forward(lam, torch.exp(gamma_log) * b)  # gamma * Bu materialised

            rows.append(_row("lru unfused", lru_unfused, _nbytes(b, h), device, args.repeats, copy_bw))
        if not args.no_peers and dtype != torch.bfloat16:
            rows.append(
                _row(
                    "chunked (PyTorch)",
                    lambda: chunked.linear_scan_forward(a, b),
                    _nbytes(a, b, h),
                    device,
                    args.repeats,
                    copy_bw,
                )
            )
            try:
                compiled = torch.compile(chunked.linear_scan_forward, dynamic=False)
                rows.append(
                    _row(
                        "chunked + torch.compile",
                        lambda: compiled(a, b),
                        _nbytes(a, b, h),
                        device,
                        args.repeats,
                        copy_bw,
                    )
                )
            except Exception as err:  # compile support varies by machine: report, do not fail the run
                rows.append({"kernel": f"chunked + torch.compile: failed ({type(err).__name__})"})
    for r in rows:
        r.update(
            shape="x".join(map(str, shape)),
            dtype=str(dtype).replace("torch.", ""),
            a="(D,)" if args.a_dim else "(B,L,D)",
        )
    return rows


def _dims(text: str, n: int, flag: str) -> tuple:
    parts = text.lower().split("x")
    if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{flag} takes {n} positive integers joined by x; got {text!r}")
    return tuple(int(p) for p in parts)


def _time_pair(name: str, fn: Callable[[], torch.Tensor], leaves, device, repeats: int, tokens: int):
    """Forward (no graph) and forward+backward times of fn over the given leaves."""

    def forward():
        with torch.no_grad():
            return fn()

    def train_step():
        for t in leaves:
            t.grad = None
        fn().float().square().mean().backward()

    fwd = common.time_fn(forward, device, repeats=repeats)
    bwd = common.time_fn(train_step, device, repeats=repeats)
    return {
        "kernel": name,
        "fwd_ms": fwd["median"] * 1e3,
        "fwdbwd_ms": bwd["median"] * 1e3,
        "fwd Mtok/s": tokens / fwd["median"] / 1e6,
        "fwd+bwd Mtok/s": tokens / bwd["median"] / 1e6,
    }


def _measure_ops(args, device) -> list[dict[str, object]]:
    """Selective scan (Mamba) and SSD (Mamba-2): the Triton kernels vs the chunked PyTorch backend."""
    from torchssm.ops.selective.chunked import selective_scan_chunked
    from torchssm.ops.selective.gpu import selective_scan_gpu
    from torchssm.ops.ssd.chunked import ssd_chunked
    from torchssm.ops.ssd.gpu import ssd_gpu
    from torchssm.ops.ssd.gpu_chunked import ssd_chunked_gpu

    gen = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(device).requires_grad_()  # noqa: E731
    rows = []
    b, l, d, n = _dims(args.selective_shape, 4, "--selective-shape")
    sel = [rnd(b, l, d), rnd(b, l, d), rnd(d, n), rnd(b, l, n), rnd(b, l, n), rnd(d)]
    A = lambda: -torch.exp(sel[2])  # noqa: E731
    for name, fn in [("selective gpu", selective_scan_gpu), ("selective chunked", selective_scan_chunked)]:
        row = _time_pair(
            name,
            lambda fn=fn: fn(sel[0], sel[1], A(), sel[3], sel[4], sel[5], None, None, True),
            sel,
            device,
            args.repeats,
            b * l,
        )
        rows.append(dict(row, shape=f"b={b} l={l} d={d} n={n}"))
    b, l, h, p, n = _dims(args.ssd_shape, 5, "--ssd-shape")
    ssd = [rnd(b, l, h, p), rnd(b, l, h), rnd(h), rnd(b, l, 1, n), rnd(b, l, 1, n), rnd(h)]
    ssd_impls = [
        ("ssd gpu (recurrent)", ssd_gpu),
        ("ssd gpu (chunked matmul, ieee)", ssd_chunked_gpu),
        ("ssd gpu (chunked matmul, tf32)", functools.partial(ssd_chunked_gpu, tf32=True)),
        ("ssd chunked (matmul)", ssd_chunked),
    ]
    for name, fn in ssd_impls:
        row = _time_pair(
            name,
            lambda fn=fn: fn(ssd[0], ssd[1], -torch.exp(ssd[2]), ssd[3], ssd[4], ssd[5], None, None, True),
            ssd,
            device,
            args.repeats,
            b * l,
        )
        rows.append(dict(row, shape=f"b={b} l={l} h={h} p={p} n={n}"))
    return rows


def run(args) -> int:
    device = common.resolve_device(args.device)
    from torchssm.ops.scan import gpu  # ImportError with the install hint when Triton is missing

    if device.type != "cuda" and not gpu.INTERPRET:
        raise ValueError(
            f"torchssm bench kernels needs a CUDA device (got {device}); "
            "on the CPU it only runs under TRITON_INTERPRET=1, as a smoke test"
        )
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
    from torchssm.bench.scan import _parse_shapes

    shapes = _parse_shapes(args.shapes)
    dtypes = []
    for name in args.dtypes.split(","):
        if name.strip() not in KERNEL_DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(KERNEL_DTYPES)}")
        dtypes.append(KERNEL_DTYPES[name.strip()])
    env = common.environment(device)
    print("torchssm bench kernels: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(
        f"times in ms: median [min, max] over {args.repeats} repeats after 1 warm-up (autotuning); "
        "vs copy = achieved bandwidth / b.clone() bandwidth"
    )
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            block = _measure(shape, dtype, device, args)
            rows += block
            print(f"\n(B, L, D) = {shape}, {block[0]['dtype']}, a {block[0]['a']}")
            table = [
                {
                    "kernel": r["kernel"],
                    "ms": f"{r['ms']:.3g} [{r['min_ms']:.3g}, {r['max_ms']:.3g}]" if "ms" in r else None,
                    "MB": r.get("MB"),
                    "GB/s": r.get("GB/s"),
                    "vs copy": r.get("vs copy"),
                }
                for r in block
            ]
            print(common.format_table(table, list(table[0])))
    if args.ops:
        block = _measure_ops(args, device)
        rows += block
        print("\nselective scan and SSD, float32 (loss = mean(y^2)); tokens = B L")
        print(common.format_table(block, ["kernel", "shape", "fwd_ms", "fwdbwd_ms", "fwd Mtok/s", "fwd+bwd Mtok/s"]))
    if args.json:
        common.save_json(args.json, {"environment": env, "repeats": args.repeats, "results": rows})
        print(f"\nwrote {args.json}")
    return 0
