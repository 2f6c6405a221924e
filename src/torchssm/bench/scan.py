"""``torchssm bench scan``: linear scan backends vs the naive loop and vs a same-size memory copy.

For each shape (B, L, D) and dtype, times ``linear_scan(a, b, backend=...)`` with a time-varying
a (B, L, D), |a| < 1 (``--a-dim`` for a time-invariant (D,) a):

* forward (no autograd graph);
* forward + backward: h = linear_scan(a, b) with a and b requiring grad, then h.backward(g);
* a same-size memory copy, ``b.clone()``: one read and one write of B L D elements, the
  bandwidth bound of any scan (which reads a and b and writes h); on the CPU also the same copy
  with ``torch.set_num_threads(1)`` ("copy 1t"), since PyTorch's multi-threaded copy waits for
  its OpenMP workers, which a busy machine can delay by milliseconds;

and prints, per backend, the median time [min, max] over ``--repeats`` (after one warm-up call,
which also compiles numba/Triton kernels; the naive loop: ``--naive-repeats``, default 3, no
warm-up), the speed-up over the naive Python loop and the ratio
to the copy. Defaults: the issue's shapes (B=8, L=4096, D=256) and (B=1, L=16384, D=16), complex64
and float32. Backends: naive, chunked and, where they apply, cpu (numba, CPU) and gpu (Triton, CUDA).
"""

from __future__ import annotations

import torch

from torchssm.bench import common
from torchssm.ops import linear_scan
from torchssm.ops.backend import resolve_backend

DEFAULT_SHAPES = "8x4096x256,1x16384x16"
SCAN_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}


def add_arguments(p) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated BxLxD (default {DEFAULT_SHAPES})")
    p.add_argument("--dtypes", default="complex64,float32", help="comma-separated, from " + ", ".join(SCAN_DTYPES))
    p.add_argument(
        "--backends",
        default="all",
        help="comma-separated from naive, chunked, cpu, gpu (default: all that run on the device)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (default 10)")
    p.add_argument(
        "--naive-repeats",
        type=int,
        default=3,
        help="timed repeats of the naive loop, no warm-up (default 3: its backward through "
        "L autograd steps takes seconds to minutes)",
    )
    p.add_argument("--a-dim", action="store_true", help="time-invariant a of shape (D,) instead of (B, L, D)")
    p.add_argument("--no-backward", action="store_true", help="forward only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the environment and all results to this JSON file")


def _parse_shapes(text: str) -> list[tuple]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes takes comma-separated BxLxD with positive integers; got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def _backends(text: str, device: torch.device) -> list[str]:
    probe = torch.empty(0, device=device)
    wanted = ["naive", "chunked", "cpu", "gpu"] if text == "all" else [n.strip() for n in text.split(",")]
    out = []
    for name in wanted:
        try:
            resolve_backend(name, probe)
        except (ValueError, ImportError) as err:
            if text != "all":  # asked for explicitly: say why it cannot run
                raise ValueError(f"backend {name!r} cannot run here: {err}") from err
            continue
        out.append(name)
    return out


def make_inputs(shape, dtype, device, *, a_dim: bool, seed: int):
    """a with |a| in [0.5, 0.999) (random phase if complex), b ~ N(0, 1): (a, b)."""
    batch, length, dim = shape
    gen = torch.Generator().manual_seed(seed)
    a_shape = (dim,) if a_dim else (batch, length, dim)
    real = dtype.to_real() if dtype.is_complex else dtype
    mag = 0.5 + 0.499 * torch.rand(a_shape, generator=gen)
    a = torch.polar(mag, 6.283 * torch.rand(a_shape, generator=gen)) if dtype.is_complex else mag
    b = torch.randn(shape, generator=gen, dtype=real)
    if dtype.is_complex:
        b = torch.complex(b, torch.randn(shape, generator=gen, dtype=real))
    return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def _measure(shape, dtype, device, backends, args) -> list[dict[str, object]]:
    a, b = make_inputs(shape, dtype, device, a_dim=args.a_dim, seed=args.seed)
    grad = torch.randn_like(b)
    copy = common.time_fn(lambda: b.clone(), device, repeats=args.repeats)
    copy1 = None
    if device.type == "cpu":  # the same copy on one thread: no OpenMP hand-off (which a busy machine delays)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            copy1 = common.time_fn(lambda: b.clone(), device, repeats=args.repeats)
        finally:
            torch.set_num_threads(threads)
    rows = []
    for name in backends:

        def forward():
            with torch.no_grad():
                return linear_scan(a, b, backend=name)  # noqa: B023 (closure called in the iteration that defines it)

        def train_step():
            a_, b_ = a.detach().requires_grad_(), b.detach().requires_grad_()
            linear_scan(a_, b_, backend=name).backward(grad)  # noqa: B023 (closure called in the iteration that defines it)

        # the naive loop compiles nothing, so it needs no warm-up, and its backward is very slow
        reps, warm = (min(args.repeats, args.naive_repeats), 0) if name == "naive" else (args.repeats, 1)
        fwd = common.time_fn(forward, device, repeats=reps, warmup=warm)
        bwd = None if args.no_backward else common.time_fn(train_step, device, repeats=reps, warmup=warm)
        rows.append(
            {
                "shape": "x".join(map(str, shape)),
                "dtype": str(dtype).replace("torch.", ""),
                "a": "(D,)" if args.a_dim else "(B,L,D)",
                "backend": name,
                "fwd_ms": fwd["median"] * 1e3,
                "fwd_min_ms": fwd["min"] * 1e3,
                "fwd_max_ms": fwd["max"] * 1e3,
                "fwdbwd_ms": bwd["median"] * 1e3 if bwd else None,
                "fwdbwd_min_ms": bwd["min"] * 1e3 if bwd else None,
                "fwdbwd_max_ms": bwd["max"] * 1e3 if bwd else None,
                "copy_ms": copy["median"] * 1e3,
                "copy_min_ms": copy["min"] * 1e3,
                "copy_max_ms": copy["max"] * 1e3,
                "copy1_ms": copy1["median"] * 1e3 if copy1 else None,
                "copy1_min_ms": copy1["min"] * 1e3 if copy1 else None,
                "copy1_max_ms": copy1["max"] * 1e3 if copy1 else None,
            }
        )
    naive = next((r for r in rows if r["backend"] == "naive"), None)
    for r in rows:
        r["fwd_vs_copy"] = r["fwd_ms"] / r["copy_ms"]
        r["fwd_vs_copy1"] = r["fwd_ms"] / r["copy1_ms"] if r["copy1_ms"] else None
        r["fwd_speedup_vs_naive"] = naive["fwd_ms"] / r["fwd_ms"] if naive else None
        r["fwdbwd_speedup_vs_naive"] = naive["fwdbwd_ms"] / r["fwdbwd_ms"] if naive and r["fwdbwd_ms"] else None
    return rows


def _span(r, key) -> str:
    if r[key] is None:
        return "-"
    return f"{r[key]:.3g} [{r[key.replace('_ms', '_min_ms')]:.3g}, {r[key.replace('_ms', '_max_ms')]:.3g}]"


def run(args) -> int:
    device = common.resolve_device(args.device)
    if args.repeats < 1 or args.naive_repeats < 1:
        raise ValueError(f"--repeats and --naive-repeats must be >= 1; got {args.repeats}, {args.naive_repeats}")
    dtypes = []
    for name in args.dtypes.split(","):
        if name.strip() not in SCAN_DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(SCAN_DTYPES)}")
        dtypes.append(SCAN_DTYPES[name.strip()])
    shapes = _parse_shapes(args.shapes)
    backends = _backends(args.backends, device)
    env = common.environment(device)
    try:
        import numba

        env["numba"] = numba.__version__  # the cpu backend runs on torch.get_num_threads() threads
    except ImportError:
        pass
    print("torchssm bench scan: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(
        f"times in ms: median [min, max] over {args.repeats} repeats after 1 warm-up (naive: "
        f"{min(args.repeats, args.naive_repeats)}, no warm-up); copy = b.clone()"
    )
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            block = _measure(shape, dtype, device, backends, args)
            rows += block
            print(
                f"\n(B, L, D) = {shape}, {block[0]['dtype']}, a {block[0]['a']}, "
                f"copy {_span(block[0], 'copy_ms')} ms, on 1 thread {_span(block[0], 'copy1_ms')} ms"
            )
            table = [
                {
                    "backend": r["backend"],
                    "forward ms": _span(r, "fwd_ms"),
                    "fwd x naive": r["fwd_speedup_vs_naive"],
                    "fwd / copy": r["fwd_vs_copy"],
                    "fwd / copy 1t": r["fwd_vs_copy1"],
                    "fwd+bwd ms": _span(r, "fwdbwd_ms"),
                    "fwd+bwd x naive": r["fwdbwd_speedup_vs_naive"],
                }
                for r in block
            ]
            print(common.format_table(table, list(table[0])))
    if args.json:
        common.save_json(
            args.json,
            {
                "environment": env,
                "repeats": args.repeats,
                "naive_repeats": min(args.repeats, args.naive_repeats),
                "results": rows,
            },
        )
        print(f"\nwrote {args.json}")
    return 0
