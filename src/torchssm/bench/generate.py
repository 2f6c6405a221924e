"""``torchssm bench generate``: autoregressive generation speed and memory, SSM step vs KV cache.

For each layer (default: mamba, mamba2, lru, transformer) a :class:`torchssm.models.lm.CausalLM` of the
same width and depth (random weights: speed does not depend on them) runs ``generate_stream``: a short
prompt in parallel mode, then one ``step`` per new token, greedy. Reported per generated length N:

* tokens/s over the N - 1 steps after the first token (the prompt pass is reported apart, ``prompt_ms``);
* per-token latency vs position: median and minimum step time over the first and the last 10% of the
  positions, and the ratio of the minima (1.0 = flat; an SSM's step is O(1), the Transformer's grows with
  its KV cache); the minimum is the robust statistic when other processes share the CPU;
* state memory: bytes of the recurrent state after the run (the Transformer's KV cache is sized
  prompt + N, i.e. exactly what the run needs), and the parameter count.

Defaults are sized for a CPU (``--lengths 256,1024``); the issue's 1k/4k/16k runs are
``--lengths 1024,4096,16384`` on a GPU. ``--threads`` sets ``torch.set_num_threads`` (on a shared
machine 1 thread avoids OpenMP spinning against other processes).
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import torch

from torchssm.bench import common
from torchssm.cpu_threads import set_cpu_threads
from torchssm.layers.base import _flatten
from torchssm.models.lm import CausalLM, LMConfig

LAYER_KWARGS = {  # equal width and depth for all; per-layer sizes from each paper's defaults
    "mamba": {},  # d_state 16, expand 2 (Mamba, Sec. 3.6)
    "mamba2": {"headdim": 64, "d_state": 64},  # Mamba-2 headdim 64 (Sec. 7); d_state 64 of its 130M-scale models
    "lru": {"d_state": 256},  # LRU: N = 256 states at H = 256 (Orvieto et al. 2023, App. D)
    "transformer": {"n_heads": 4},
}


def add_arguments(p) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--layers", default="mamba,mamba2,lru,transformer")
    p.add_argument("--lengths", default="256,1024", help="numbers of generated tokens, comma-separated")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the environment and all results to this JSON file")


def _state_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in _flatten(state))


def measure(layer: str, n_new: int, args, device, dtype) -> Dict[str, object]:
    torch.manual_seed(args.seed)
    kw = dict(LAYER_KWARGS.get(layer, {}))
    if layer == "transformer":
        kw["max_len"] = args.prompt_length + n_new
    cfg = LMConfig(layer=layer, d_model=args.d_model, n_layer=args.n_layer, vocab_size=256, layer_kwargs=kw)
    model = CausalLM(cfg).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, 256, (args.batch, args.prompt_length), device=device)
    for _ in model.generate_stream(prompt, 8, temperature=0):  # warm-up: first-call costs (JIT, allocator)
        pass
    common.synchronize(device)
    times: List[float] = []
    last = time.perf_counter()
    for _ in model.generate_stream(prompt, n_new, temperature=0):
        common.synchronize(device)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    steps = times[1:]  # times[0] includes the parallel prompt pass
    k = max(1, len(steps) // 10)
    first, final = statistics.median(steps[:k]), statistics.median(steps[-k:])
    first_min, final_min = min(steps[:k]), min(steps[-k:])  # robust to other processes on a shared CPU
    with torch.no_grad():
        _, state = model(prompt, return_state=True)
        for t in range(2):
            _, state = model.step(prompt[:, 0], state)
    return {"layer": layer, "new_tokens": n_new, "batch": args.batch, "tokens_per_s": args.batch * len(steps) / sum(steps),
            "latency_first_ms": first * 1e3, "latency_last_ms": final * 1e3,
            "min_first_ms": first_min * 1e3, "min_last_ms": final_min * 1e3, "last_over_first": final_min / first_min,
            "prompt_ms": times[0] * 1e3, "state_MB": _state_bytes(state) / 2**20,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def run(args) -> int:
    device = common.resolve_device(args.device)
    dtype = common.resolve_dtype(args.dtype)
    if args.threads:
        set_cpu_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    if not lengths or min(lengths) < 10:
        raise ValueError(f"--lengths must be integers >= 10; got {args.lengths!r}")
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    env = common.environment(device)
    print("torchssm bench generate: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"d_model={args.d_model}, n_layer={args.n_layer}, batch={args.batch}, prompt={args.prompt_length}, "
          f"dtype={args.dtype}, greedy; latency = median (min) step time over the first / last 10% of positions")
    rows = [measure(layer, n, args, device, dtype) for n in lengths for layer in layers]
    print(common.format_table(rows, ["layer", "new_tokens", "tokens_per_s", "latency_first_ms", "latency_last_ms",
                                     "min_first_ms", "min_last_ms", "last_over_first", "prompt_ms", "state_MB",
                                     "params_M"]))
    if args.json:
        common.save_json(args.json, {"environment": env, "args": vars(args).copy() | {"func": None}, "results": rows})
        print(f"\nwrote {args.json}")
    return 0


