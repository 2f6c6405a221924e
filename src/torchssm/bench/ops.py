"""``torchssm bench ops``: Mamba's selective scan and Mamba-2's SSD, forward + backward, fast vs naive
and vs a same-size memory copy.

* selective scan, shape B x L x D x N (B, C shared by the D channels): ``selective_scan`` with
  backend "naive" (the Python loop), the fused kernels ("fused/cpu": numba, "fused/gpu": Triton) and the
  chunked op on each ``linear_scan`` backend that runs on the device ("chunked/chunked", "chunked/cpu",
  "chunked/gpu"), with dt bias + softplus, D skip and z gate as the Mamba block uses it;
* SSD, shape B x L x H x P x N (one group): the recurrence (naive), the chunked matmul algorithm, and on
  CUDA the fused Triton kernels ("gpu");
* copy: ``buf.clone()`` of a flat buffer holding the op's minimal input + output elements (read once,
  written once): the bandwidth bound no implementation can beat.

Defaults are small enough for a CPU (the Mamba block's d_state = 16 and Mamba-2's headdim = 64,
d_state = 64); pass ``--sel-shapes`` / ``--ssd-shapes`` for larger ones.
"""

from __future__ import annotations

import functools
import importlib

import torch

from torchssm.bench import common
from torchssm.cpu_threads import set_cpu_threads
from torchssm.ops.backend import resolve_backend
from torchssm.ops.selective import selective_scan, selective_scan_chunked
from torchssm.ops.ssd import ssd

DEFAULT_SEL = "2x1024x256x16"
DEFAULT_SSD = "2x1024x8x64x64"


def add_arguments(p) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda ...")
    p.add_argument("--sel-shapes", default=DEFAULT_SEL, help=f"selective scan BxLxDxN, comma-separated ({DEFAULT_SEL})")
    p.add_argument("--ssd-shapes", default=DEFAULT_SSD, help=f"SSD BxLxHxPxN, comma-separated ({DEFAULT_SSD})")
    p.add_argument("--dtype", default="float32", help="float32 | float64")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk of the chunked algorithms (default 64)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naive-max-length", type=int, default=4096, help="skip the naive loop above this length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; 1 on a shared machine)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=common.CLOCKS,
        help="wall: elapsed time; cpu: CPU time of this process (CPU device only; see bench layers)",
    )
    p.add_argument("--json", help="write the environment and all results to this JSON file")


def _shapes(text: str, n: int, flag: str) -> list[tuple]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.lower().split("x")
        if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(
                f"{flag} takes comma-separated shapes of {n} positive integers joined by 'x'; got {item!r}"
            )
        out.append(tuple(int(p) for p in parts))
    return out


def _fused_available(kind: str, device: torch.device) -> bool:
    """The fused numba ("cpu") or Triton ("gpu") selective kernels import and fit the device."""
    if (kind == "cpu") != (device.type == "cpu") or (kind == "gpu" and device.type != "cuda"):
        return False
    try:
        importlib.import_module(f"torchssm.ops.selective.{kind}")
    except ImportError:
        return False
    return True


def _scan_backends(device: torch.device) -> list[str]:
    probe = torch.empty(0, device=device)
    out = []
    for name in ("chunked", "cpu", "gpu"):
        try:
            resolve_backend(name, probe)
        except (ValueError, ImportError):
            continue
        out.append(name)
    return out


def selective_inputs(shape, dtype, device, seed):
    b, l, d, n = shape
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    args = dict(
        u=r(b, l, d),
        delta=r(b, l, d) - 1,
        A=-torch.arange(1, n + 1).float().repeat(d, 1),
        B=r(b, l, n),
        C=r(b, l, n),
        D=torch.ones(d),
        z=r(b, l, d),
        delta_bias=r(d) * 0.1,
    )
    io = 4 * b * l * d + 2 * b * l * n  # u, delta, z, y + B, C
    return {k: v.to(device=device, dtype=dtype) for k, v in args.items()}, io


def ssd_inputs(shape, dtype, device, seed):
    b, l, h, p, n = shape
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    args = dict(
        x=r(b, l, h, p),
        dt=r(b, l, h) - 1,
        A=-torch.rand(h, generator=g) * 15 - 1,
        B=r(b, l, 1, n),
        C=r(b, l, 1, n),
        D=torch.ones(h),
        dt_bias=r(h) * 0.1,
    )
    io = 2 * b * l * h * p + b * l * h + 2 * b * l * n
    return {k: v.to(device=device, dtype=dtype) for k, v in args.items()}, io


def _time_pair(call, args, device, repeats, clock="wall"):
    """(forward, forward+backward) timings of ``call(**args)``."""

    def forward():
        with torch.no_grad():
            call(**args)

    grads = {}

    def train_step():
        leaves = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in args.items()}
        y = call(**leaves)
        if "g" not in grads:
            grads["g"] = torch.randn_like(y)
        y.backward(grads["g"])

    return (
        common.time_fn(forward, device, repeats=repeats, clock=clock),
        common.time_fn(train_step, device, repeats=repeats, clock=clock),
    )


def _row(op, shape, name, fwd, bwd, copy) -> dict[str, object]:
    return {
        "op": op,
        "shape": "x".join(map(str, shape)),
        "impl": name,
        "fwd_ms": fwd["median"] * 1e3,
        "fwd_min_ms": fwd["min"] * 1e3,
        "fwd_max_ms": fwd["max"] * 1e3,
        "fwdbwd_ms": bwd["median"] * 1e3,
        "fwdbwd_min_ms": bwd["min"] * 1e3,
        "fwdbwd_max_ms": bwd["max"] * 1e3,
        "copy_ms": copy["median"] * 1e3,
    }


def _finish(rows):
    naive = next((r for r in rows if r["impl"] == "naive"), None)
    for r in rows:
        r["fwd_x_naive"] = naive["fwd_ms"] / r["fwd_ms"] if naive else None
        r["fwdbwd_x_naive"] = naive["fwdbwd_ms"] / r["fwdbwd_ms"] if naive else None
        r["fwd_per_copy"] = r["fwd_ms"] / r["copy_ms"]
    return rows


def _print(rows) -> None:
    r0 = rows[0]
    print(f"\n{r0['op']} {r0['shape']}: copy of the op's input+output bytes {r0['copy_ms']:.3g} ms")
    table = [
        {
            "impl": r["impl"],
            "forward ms": f"{r['fwd_ms']:.3g} [{r['fwd_min_ms']:.3g}, {r['fwd_max_ms']:.3g}]",
            "fwd x naive": r["fwd_x_naive"],
            "fwd / copy": r["fwd_per_copy"],
            "fwd+bwd ms": f"{r['fwdbwd_ms']:.3g} [{r['fwdbwd_min_ms']:.3g}, {r['fwdbwd_max_ms']:.3g}]",
            "fwd+bwd x naive": r["fwdbwd_x_naive"],
        }
        for r in rows
    ]
    print(common.format_table(table, list(table[0])))


def run(args) -> int:
    device = common.resolve_device(args.device)
    dtype = common.resolve_dtype(args.dtype)
    if args.threads:
        set_cpu_threads(args.threads)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
    env = common.environment(device)
    print("torchssm bench ops: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(
        f"{args.clock} times in ms: median [min, max] over {args.repeats} repeats after 1 warm-up; "
        f"dtype {args.dtype}, chunk {args.chunk_size}"
    )
    results = []
    for shape in _shapes(args.sel_shapes, 4, "--sel-shapes"):
        inputs, io = selective_inputs(shape, dtype, device, args.seed)
        buf = torch.empty(io // 2, device=device, dtype=dtype)
        copy = common.time_fn(lambda: buf.clone(), device, repeats=args.repeats, clock=args.clock)  # noqa: B023 (closure called in the iteration that defines it)
        impls = {}
        if shape[1] <= args.naive_max_length:
            impls["naive"] = functools.partial(selective_scan, backend="naive")
        for fused in ("cpu", "gpu"):
            if _fused_available(fused, device):
                impls[f"fused/{fused}"] = functools.partial(selective_scan, backend=fused)
        for b in _scan_backends(device):
            impls[f"chunked/{b}"] = functools.partial(selective_scan_chunked, scan_backend=b)
        rows = []
        for name, fn in impls.items():

            def call(fn=fn, **kw):
                return fn(**kw, delta_softplus=True, chunk_size=args.chunk_size)

            times = _time_pair(call, inputs, device, args.repeats, args.clock)
            rows.append(_row("selective_scan", shape, name, *times, copy))
        _print(_finish(rows))
        results += rows
    for shape in _shapes(args.ssd_shapes, 5, "--ssd-shapes"):
        inputs, io = ssd_inputs(shape, dtype, device, args.seed)
        buf = torch.empty(io // 2, device=device, dtype=dtype)
        copy = common.time_fn(lambda: buf.clone(), device, repeats=args.repeats, clock=args.clock)  # noqa: B023 (closure called in the iteration that defines it)
        rows = []
        names = (["naive"] if shape[1] <= args.naive_max_length else []) + ["chunked"]
        names += [k for k in ("cpu", "gpu") if _fused_available(k, device)]
        for name in names:

            def call(name=name, **kw):
                return ssd(**kw, dt_softplus=True, chunk_size=args.chunk_size, backend=name)

            times = _time_pair(call, inputs, device, args.repeats, args.clock)
            rows.append(_row("ssd", shape, name, *times, copy))
        _print(_finish(rows))
        results += rows
    if args.json:
        common.save_json(
            args.json, {"environment": env, "repeats": args.repeats, "clock": args.clock, "results": results}
        )
        print(f"\nwrote {args.json}")
    return 0
