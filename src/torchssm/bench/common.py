"""Shared benchmark helpers: environment record, timing with spread, peak memory, power-law fits, tables.

Every benchmark result carries :func:`environment` (device, versions, date) next to its shapes, dtype
and repeats, so a number in BENCHMARKS.md can be traced to where it was measured.

Peak memory (:func:`peak_memory`):
  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
    allocated before the call (bytes held by the caching allocator for tensors created by the call).
  * CPU: the PyTorch profiler's allocation events (``profile_memory=True``): the running sum of
    allocated minus freed bytes, in time order; its maximum is the peak of tensor memory allocated
    *during* the call above what existed before (no tracemalloc, no RSS: allocator caches and Python
    objects are not counted). Measured in a separate run from the timings (the profiler slows ops down).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from torchssm.cpu_threads import get_cpu_threads, set_cpu_threads
from torchssm.devices import resolve_device  # noqa: F401  (the benchmarks' common.resolve_device)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_name() -> str:
    """The CPU's model name, with its family / model numbers (a virtual machine may report only "AMD EPYC")."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def environment(device: torch.device) -> dict[str, object]:
    """Where and with what a number was measured: device name, CPU vector capability, versions, threads, UTC date."""
    import numpy

    import torchssm

    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        # the vector instructions PyTorch's CPU kernels dispatch to (e.g. AVX2, AVX512): float results, and so a
        # seeded run's numbers, can differ between hosts that differ here
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torchssm": torchssm.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):  # other processes competing for the CPU make timings noisy
        env["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = ("wall", "cpu")


@contextlib.contextmanager
def threads(n: int):
    """Run the block with ``n`` CPU threads in numba (the compiled CPU scans) and torch, then restore."""
    saved = get_cpu_threads()
    try:
        set_cpu_threads(n)
        yield
    finally:
        set_cpu_threads(*saved)


def time_fn(
    fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1, clock: str = "wall"
) -> dict[str, object]:
    """Time of ``fn()`` (seconds): ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``clock="wall"``: elapsed time (``time.perf_counter``, device synchronised). ``clock="cpu"``: CPU
    time of this process summed over its threads (``time.process_time``): the work done, unaffected by
    other processes competing for the cores (with one thread it is the wall time of an idle machine).
    Returns {"median", "min", "max", "iqr" (interquartile range; 0 below 4 repeats), "times"}.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if clock not in CLOCKS or (clock == "cpu" and device.type != "cpu"):
        raise ValueError(f"clock must be one of {CLOCKS} ('cpu' only on a CPU device); got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = now()
        fn()
        synchronize(device)
        times.append(now() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [times[0], 0, times[0]]
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "iqr": q[2] - q[0] if len(times) >= 4 else 0.0,
        "times": times,
    }


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level stderr (the profiler logs a line at start and stop); Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str]:
    """(peak bytes allocated during ``fn()`` above the memory held before it, method name)."""
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base), "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:  # nbytes > 0: allocation, < 0: free
        running += e.nbytes()
        peak = max(peak, running)
    return int(peak), "torch.profiler allocation events (profile_memory=True)"


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares fit of y = a x^k in log-log space: returns (k, a), or None with < 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y is not None and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return k, math.exp(my - k * mx)


def crossover(
    lengths: Sequence[int], t_model: Sequence[float | None], t_ref: Sequence[float | None]
) -> dict[str, float | None]:
    """Where ``model`` becomes faster than ``ref`` as the length grows.

    "measured": the smallest measured length from which the model is faster at every longer measured
    length (None if never). "fitted": where the two power-law fits t = a L^k intersect (None if the
    model's fit does not grow more slowly than the reference's, or a fit is missing); it may lie outside
    the measured range (an extrapolation).
    """
    pairs = [(l, a, b) for l, a, b in zip(lengths, t_model, t_ref) if a is not None and b is not None]
    measured = None
    for i, (l, _, _) in enumerate(pairs):
        if all(a < b for _, a, b in pairs[i:]):
            measured = l
            break
    fm = fit_power_law([p[0] for p in pairs], [p[1] for p in pairs])
    fr = fit_power_law([p[0] for p in pairs], [p[2] for p in pairs])
    fitted = None
    if fm and fr and fr[0] - fm[0] > 1e-9:  # the model grows more slowly: it wins beyond the intersection
        fitted = (fm[1] / fr[1]) ** (1.0 / (fr[0] - fm[0]))
    return {"measured": measured, "fitted": fitted}


def format_table(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    """A plain aligned text table (also valid Markdown)."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def save_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)


def is_oom(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (RuntimeError "can't allocate memory",
    e.g. under ``ulimit -v``)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text
