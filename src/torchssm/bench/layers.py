"""``torchssm bench layers``: forward+backward time and peak memory of every layer vs the Transformer.

For each registered layer (``torchssm.layers.registry``) and length L, one training step of the
layer alone: y = layer(x) with x (B, L, H) requiring grad, then y.backward(g). Reported per
(layer, L): the median (or ``--statistic min``) wall time over ``--repeats`` (after ``--warmup``),
the min..max spread, tokens/s (B L / time) and peak memory (method in :mod:`torchssm.bench.common`). Per layer: the
growth exponent k of a fit time ~ L^k (about 1 for a scan, 2 for attention at long L) and the
crossover length from which it beats the Transformer layer ("transformer", SDPA with RoPE).

Defaults B=8, L in {1k, 4k, 16k}, H=256, N=64 (the issue's GPU shapes); ``--quick`` uses CPU-sized
shapes B=2, L in {256, 512, 1024, 2048}, H=64, N=16. A configuration that runs out of memory is
recorded as "oom"; once one length takes longer than ``--max-seconds`` the longer ones are skipped.
"""

from __future__ import annotations

import inspect
import json
import math
import sys

import torch

from torchssm.bench import common
from torchssm.layers.registry import available_layers, build_layer, get_layer_class

REFERENCE = "transformer"


def add_arguments(p) -> None:
    p.add_argument("--layers", default="all", help="comma-separated registry names (default: every available)")
    p.add_argument("--batch", "-B", type=int, help="batch size (default 8; --quick 2)")
    p.add_argument("--lengths", "-L", help="comma-separated sequence lengths (default 1024,4096,16384)")
    p.add_argument("--d-model", "-H", type=int, help="width (default 256; --quick 64)")
    p.add_argument("--d-state", "-N", type=int, help="state size, for layers that take d_state (default 64)")
    p.add_argument(
        "--layer-kwargs",
        default="{}",
        help='JSON {"layer": {kwargs}} for specific layers, e.g. \'{"transformer": {"n_heads": 8}}\'',
    )
    p.add_argument("--repeats", type=int, help="timed repeats (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (JIT compilation, caches)")
    p.add_argument(
        "--statistic",
        default="median",
        choices=("median", "min"),
        help="time reported and fitted: median of the repeats, or min (robust on a shared machine)",
    )
    p.add_argument("--dtype", default="float32", choices=sorted(common.DTYPES))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--quick", action="store_true", help="CPU-sized shapes: B=2, L=256..2048, H=64, N=16, 3 repeats")
    p.add_argument(
        "--clock",
        default="wall",
        choices=common.CLOCKS,
        help="wall time, or the process's CPU time (CPU only; unaffected by other processes)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and numba (0: leave as is)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip longer L once a step takes this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--plot", help="write time and memory vs L to this PNG/SVG")


FULL = {"batch": 8, "lengths": "1024,4096,16384", "d_model": 256, "d_state": 64, "repeats": 5}
QUICK = {"batch": 2, "lengths": "256,512,1024,2048", "d_model": 64, "d_state": 16, "repeats": 3}


def _apply_defaults(args) -> None:
    """Fill the shape options left unset from FULL, or QUICK with ``--quick`` (explicit values win)."""
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def layer_kwargs(name: str, d_state: int, extra: dict | None = None) -> dict:
    """Keyword arguments for layer ``name``: ``d_state`` if its constructor takes one, plus ``extra``."""
    params = inspect.signature(get_layer_class(name).__init__).parameters
    kwargs = {"d_state": d_state} if "d_state" in params else {}
    if name == REFERENCE and "max_len" in params:
        kwargs["max_len"] = 1  # no KV cache is used in training mode
    kwargs.update(extra or {})
    return kwargs


def bench_layer(
    name: str,
    lengths: list[int],
    *,
    batch: int,
    d_model: int,
    d_state: int,
    device,
    dtype,
    repeats: int = 5,
    warmup: int = 2,
    memory: bool = True,
    max_seconds: float = 60.0,
    extra_kwargs: dict | None = None,
    seed: int = 0,
    statistic: str = "median",
    clock: str = "wall",
) -> list[dict[str, object]]:
    """One row per length: {"layer", "L", "status", "time_s" (the ``statistic`` of the repeats),
    "iqr_s", "min_s", "max_s", "tokens_per_s", "peak_mb"}."""
    torch.manual_seed(seed)
    layer = build_layer(name, d_model, **layer_kwargs(name, d_state, extra_kwargs)).to(device=device, dtype=dtype)
    layer.train()
    rows, skip = [], None  # skip: why the longer lengths are not run
    for length in lengths:
        row = {
            "layer": name,
            "L": length,
            "status": "ok",
            "time_s": None,
            "iqr_s": None,
            "tokens_per_s": None,
            "peak_mb": None,
        }
        rows.append(row)
        if skip:
            row["status"] = f"skipped ({skip} at a shorter L)"
            continue
        x = torch.randn(batch, length, d_model, device=device, dtype=dtype, requires_grad=True)  # (b, l, h)
        g = torch.randn(batch, length, d_model, device=device, dtype=dtype)  # (b, l, h): upstream gradient

        def step():
            x.grad = None  # noqa: B023, F821 (closure called in the iteration that defines it)
            layer.zero_grad(set_to_none=True)
            layer(x).backward(g)  # noqa: B023, F821 (closure called in the iteration that defines it)

        try:
            t = common.time_fn(step, device, repeats=repeats, warmup=warmup, clock=clock)
            row.update(
                time_s=t[statistic],
                iqr_s=t["iqr"],
                min_s=t["min"],
                max_s=t["max"],
                tokens_per_s=batch * length / t[statistic],
            )
            if memory:
                row["peak_mb"] = common.peak_memory(step, device)[0] / 2**20
            if t["median"] > max_seconds:
                skip = f"> {max_seconds:g} s"
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not common.is_oom(err):
                raise
            row["status"], skip = "oom", "oom"
        finally:
            del x, g
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def summarize(rows: list[dict], lengths: list[int]) -> list[dict]:
    """Per layer: growth exponent k (time ~ L^k) and crossover length vs the Transformer layer."""
    by_layer: dict[str, dict[int, float | None]] = {}
    for r in rows:
        by_layer.setdefault(r["layer"], {})[r["L"]] = r["time_s"]
    ref = by_layer.get(REFERENCE)
    out = []
    for name, times in by_layer.items():
        ts = [times.get(l) for l in lengths]
        fit = common.fit_power_law(lengths, ts)
        entry = {
            "layer": name,
            "exponent_k": fit[0] if fit else None,
            "crossover_measured": None,
            "crossover_fitted": None,
        }
        if ref is not None and name != REFERENCE:
            cross = common.crossover(lengths, ts, [ref.get(l) for l in lengths])
            entry["crossover_measured"], entry["crossover_fitted"] = cross["measured"], cross["fitted"]
        out.append(entry)
    return out


def plot(path: str, rows: list[dict], meta: dict) -> str:
    from torchssm.analysis.plots import new_figure, save_figure

    fig, (ax_t, ax_m) = new_figure(2, 1)
    for name in dict.fromkeys(r["layer"] for r in rows):
        pts = [(r["L"], r["time_s"], r["peak_mb"]) for r in rows if r["layer"] == name and r["time_s"]]
        if not pts:
            continue
        ls = [p[0] for p in pts]
        style = "k--" if name == REFERENCE else "-"
        ax_t.loglog(ls, [p[1] * 1e3 for p in pts], style, marker="o", label=name)
        if any(p[2] for p in pts):
            ax_m.loglog(ls, [p[2] for p in pts], style, marker="o", label=name)
    s = meta["shapes"]
    ax_t.set_title(f"forward+backward, B={s['batch']} H={s['d_model']} N={s['d_state']} {meta['dtype']}")
    ax_t.set_xlabel("sequence length L")
    ax_t.set_ylabel(f"{meta['statistic']} {meta['clock']} time (ms) of {meta['repeats']} repeats")
    ax_m.set_title(f"peak memory ({meta['memory_method']})", fontsize=7)
    ax_m.set_xlabel("sequence length L")
    ax_m.set_ylabel("MiB")
    for ax in (ax_t, ax_m):
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    env = meta["environment"]
    fig.suptitle(f"{env['device_name']} | torch {env['torch']} | {env['date_utc']}", fontsize=8)
    return save_figure(fig, path)


def run(args) -> int:
    _apply_defaults(args)
    if args.threads:
        with common.threads(args.threads):
            return _run(args)
    return _run(args)


def _run(args) -> int:
    device, dtype = common.resolve_device(args.device), common.resolve_dtype(args.dtype)
    lengths = sorted(int(v) for v in str(args.lengths).split(","))
    names = available_layers() if args.layers == "all" else [n.strip() for n in args.layers.split(",")]
    extra = json.loads(args.layer_kwargs)
    rows: list[dict] = []
    for name in names:
        print(f"[bench layers] {name} ...", file=sys.stderr, flush=True)
        rows += bench_layer(
            name,
            lengths,
            batch=args.batch,
            d_model=args.d_model,
            d_state=args.d_state,
            device=device,
            dtype=dtype,
            repeats=args.repeats,
            warmup=args.warmup,
            memory=not args.no_memory,
            max_seconds=args.max_seconds,
            extra_kwargs=extra.get(name),
            seed=args.seed,
            statistic=args.statistic,
            clock=args.clock,
        )
    summary = summarize(rows, lengths)
    memory_method = "cuda max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events"
    meta = {
        "benchmark": "layers (forward+backward)",
        "environment": common.environment(device),
        "dtype": args.dtype,
        "shapes": {"batch": args.batch, "lengths": lengths, "d_model": args.d_model, "d_state": args.d_state},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "statistic": args.statistic,
        "clock": args.clock,
        "spread": "min_s..max_s over the repeats; iqr_s = interquartile range (0 below 4 repeats)",
        "memory_method": "skipped" if args.no_memory else memory_method,
    }
    env = meta["environment"]
    print(
        f"# {env['device_name']} ({env['device']}, {env['cpu_threads']} threads, load {env.get('load_avg_1min')}), "
        f"torch {env['torch']}, {args.dtype}, B={args.batch} H={args.d_model} N={args.d_state}, "
        f"{args.statistic} {args.clock} time of {args.repeats} (+{args.warmup} warmup), {env['date_utc']}"
    )
    table = [
        dict(
            r,
            time_ms=_ms(r["time_s"]),
            min_ms=_ms(r.get("min_s")),
            max_ms=_ms(r.get("max_s")),
            ktok_per_s=r["tokens_per_s"] / 1e3 if r["tokens_per_s"] else None,
        )
        for r in rows
    ]
    print(common.format_table(table, ["layer", "L", "time_ms", "min_ms", "max_ms", "ktok_per_s", "peak_mb", "status"]))
    print()
    print(common.format_table(summary, ["layer", "exponent_k", "crossover_measured", "crossover_fitted"]))
    if args.json:
        common.save_json(args.json, {**meta, "results": rows, "summary": summary})
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot(args.plot, rows, meta)}")
    return 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isnan(seconds) else seconds * 1e3
