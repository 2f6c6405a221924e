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

``--vs-mambapy`` (issue 20's target, when mambapy is installed: the ``bench`` extra): a 4-layer Mamba LM
(``--d-model``, batch ``--batch``) in torchssm and in mambapy's pure-PyTorch ``LM`` with the same weights;
the logits of a prompt and of 8 steps are checked equal first, then ``--repeats`` rounds of ``--steps``
greedy steps each are timed interleaved (one round of each per repeat, CPU time) with 1 and 2 threads;
reported: the time of one step (one token for each of the batch rows) of each and the ratio torchssm / mambapy
(median over rounds).
``--compile`` adds torchssm's step through ``torch.compile`` (``generate(compile=True)``) to that race.
``--contexts 16,4096,65536``: per-token step time after a prompt of each length (prefilled in parallel
mode): flat for an SSM, whose state does not grow.
"""

from __future__ import annotations

import statistics
import time

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
    p.add_argument("--lengths", default="256,1024", help="numbers of generated tokens, comma-separated (0: none)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the environment and all results to this JSON file")
    p.add_argument(
        "--vs-mambapy",
        action="store_true",
        help="per-token time against mambapy's step (same weights, interleaved, 1 and 2 threads)",
    )
    p.add_argument("--steps", type=int, default=64, help="greedy steps per timed round (--vs-mambapy, --contexts)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds (--vs-mambapy)")
    p.add_argument("--compile", action="store_true", help="--vs-mambapy: also time the torch.compile'd step")
    p.add_argument("--contexts", default=None, help="prompt lengths for per-token latency vs context, e.g. 16,65536")


def _state_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in _flatten(state))


def measure(layer: str, n_new: int, args, device, dtype) -> dict[str, object]:
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
    times: list[float] = []
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
        for _ in range(2):
            _, state = model.step(prompt[:, 0], state)
    return {
        "layer": layer,
        "new_tokens": n_new,
        "batch": args.batch,
        "tokens_per_s": args.batch * len(steps) / sum(steps),
        "latency_first_ms": first * 1e3,
        "latency_last_ms": final * 1e3,
        "min_first_ms": first_min * 1e3,
        "min_last_ms": final_min * 1e3,
        "last_over_first": final_min / first_min,
        "prompt_ms": times[0] * 1e3,
        "state_MB": _state_bytes(state) / 2**20,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    }


class _MambapyLM(torch.nn.Module):
    """mambapy's ``LM`` (``mambapy/lm.py``: embedding, ``Mamba``, RMSNorm, lm_head; its ``forward`` and
    ``step`` verbatim) built here because ``mambapy.lm`` imports mamba_ssm's Triton kernels for Mamba-2."""

    def __init__(self, config, vocab_size: int):
        from mambapy.mamba import Mamba, RMSNorm

        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, config.d_model)
        self.mamba = Mamba(config)
        self.norm_f = RMSNorm(config.d_model, config.rms_norm_eps)
        self.lm_head = torch.nn.Linear(config.d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.mamba(self.embedding(tokens))))

    def step(self, token: torch.Tensor, caches: list):
        x, caches = self.mamba.step(self.embedding(token), caches)
        return self.lm_head(self.norm_f(x)), caches


def _mambapy_twin(model: CausalLM) -> _MambapyLM:
    """mambapy's LM with ``model``'s weights (a Mamba CausalLM: the module names match one to one)."""
    from mambapy.mamba import MambaConfig

    cfg, mixer = model.config, model.backbone.layers[0].mixer
    twin = _MambapyLM(
        MambaConfig(
            d_model=cfg.d_model,
            n_layers=cfg.n_layer,
            d_state=mixer.d_state,
            expand_factor=mixer.expand,
            d_conv=mixer.d_conv,
            rms_norm_eps=cfg.norm_eps,
            pscan=False,
        ),
        cfg.padded_vocab_size,
    )
    sd = {
        k.replace("backbone.layers.", "mamba.layers.").replace("backbone.", ""): v
        for k, v in model.state_dict().items()
    }
    twin.load_state_dict(sd)
    return twin.eval()


def compare_mambapy(args, device, dtype) -> list[dict[str, object]]:
    """Per-token greedy step time, torchssm vs mambapy (same weights, checked equal first, interleaved)."""
    from torchssm.bench.peers import interleaved

    torch.manual_seed(args.seed)
    model = CausalLM(LMConfig(layer="mamba", d_model=args.d_model, n_layer=args.n_layer, vocab_size=256)).eval()
    twin = _mambapy_twin(model)
    b, mixer = args.batch, model.backbone.layers[0].mixer
    prompt = torch.randint(0, 256, (b, args.prompt_length))
    with torch.no_grad():
        logits, state = model(prompt, return_state=True)
        ref = twin(prompt)[:, :, :256]
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
        step = model._step_function(b, state)
        caches = [(None, torch.zeros(b, mixer.d_inner, mixer.d_conv - 1)) for _ in range(args.n_layer)]
        for t in range(args.prompt_length):  # mambapy has no parallel prefill with state: step the prompt
            _, caches = twin.step(prompt[:, t], caches)
        tok = logits[:, -1].argmax(-1)
        for _ in range(8):
            ours, state = step(tok, state)
            theirs, caches = twin.step(tok, caches)
            torch.testing.assert_close(ours, theirs[:, :256], rtol=1e-4, atol=1e-4)
            tok = ours.argmax(-1)
    start = (state, caches, tok)

    def ours_loop() -> None:
        s, _, t = start
        for _ in range(args.steps):
            logits, s = step(t, s)
            t = logits.argmax(-1)

    compiled = model._step_function(b, state, compile=True) if getattr(args, "compile", False) else None
    if compiled is not None:
        with torch.no_grad():
            torch.testing.assert_close(compiled(tok, state)[0], step(tok, state)[0], rtol=1e-4, atol=1e-4)

    def compiled_loop() -> None:
        s, _, t = start
        for _ in range(args.steps):
            logits, s = compiled(t, s)
            t = logits.argmax(-1)

    def theirs_loop() -> None:
        _, c, t = start
        for _ in range(args.steps):
            logits, c = twin.step(t, c)
            t = logits.argmax(-1)

    rows, before = [], torch.get_num_threads()
    for threads in (1, 2):
        set_cpu_threads(threads)
        with torch.no_grad():
            fns = {"torchssm": ours_loop, "mambapy": theirs_loop} | ({"compiled": compiled_loop} if compiled else {})
            med = interleaved(fns, repeats=args.repeats, warmup=2)
        rows.append(
            {
                "threads": threads,
                "batch": b,
                "torchssm_ms_per_step": med["torchssm"] / args.steps * 1e3,
                "mambapy_ms_per_step": med["mambapy"] / args.steps * 1e3,
                "ratio": med["torchssm"] / med["mambapy"],
            }
            | (
                {
                    "compiled_ms_per_step": med["compiled"] / args.steps * 1e3,
                    "compiled_ratio": med["compiled"] / med["mambapy"],
                }
                if compiled
                else {}
            )
        )
    set_cpu_threads(before)
    return rows


def per_token_vs_context(layer: str, contexts: list[int], args, device, dtype) -> list[dict[str, object]]:
    """Per-token step time (median of --steps greedy steps, CPU time) after a prompt of each length."""
    torch.manual_seed(args.seed)
    cfg = LMConfig(
        layer=layer,
        d_model=args.d_model,
        n_layer=args.n_layer,
        vocab_size=256,
        layer_kwargs=dict(LAYER_KWARGS.get(layer, {})),
        max_length=max(contexts) + args.steps + 1,
    )
    model = CausalLM(cfg).to(device=device, dtype=dtype).eval()
    rows = []
    for n in contexts:
        prompt = torch.randint(0, 256, (args.batch, n), device=device)
        with torch.no_grad():
            t0 = time.process_time()
            logits, state = model(prompt, return_state=True)
            prefill = time.process_time() - t0
            step = model._step_function(args.batch, state)
            tok, times = logits[:, -1].argmax(-1), []
            for _ in range(args.steps):
                t0 = time.process_time()
                out, state = step(tok, state)
                tok = out.argmax(-1)
                common.synchronize(device)
                times.append(time.process_time() - t0)
        rows.append(
            {
                "layer": layer,
                "context": n,
                "batch": args.batch,
                "prefill_s": prefill,
                "ms_per_token_median": statistics.median(times) * 1e3,
                "ms_per_token_min": min(times) * 1e3,
            }
        )
        del prompt, logits, state
    return rows


def run(args) -> int:
    device = common.resolve_device(args.device)
    dtype = common.resolve_dtype(args.dtype)
    if args.threads:
        set_cpu_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    if lengths != [0] and (not lengths or min(lengths) < 10):  # 0: only --vs-mambapy / --contexts
        raise ValueError(f"--lengths must be integers >= 10; got {args.lengths!r}")
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    env = common.environment(device)
    print("torchssm bench generate: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    extra: dict[str, object] = {}
    if args.vs_mambapy:
        try:
            import mambapy  # noqa: F401
        except ImportError:
            print("mambapy is not installed (pip install 'torchssm[bench]'): skipping --vs-mambapy")
        else:
            rows = compare_mambapy(args, device, dtype)
            print(
                f"\nvs mambapy: Mamba LM d_model={args.d_model}, n_layer={args.n_layer}, batch={args.batch}, "
                f"{args.steps} greedy steps x {args.repeats} interleaved rounds, CPU time "
                f"(logits checked equal first)"
            )
            print(
                common.format_table(
                    rows,
                    ["threads", "batch", "torchssm_ms_per_step", "mambapy_ms_per_step", "ratio"]
                    + (["compiled_ms_per_step", "compiled_ratio"] if args.compile else []),
                )
            )
            extra["vs_mambapy"] = rows
    if args.contexts:
        contexts = [int(x) for x in args.contexts.split(",") if x.strip()]
        rows = [
            r
            for layer in layers
            if layer != "transformer"
            for r in per_token_vs_context(layer, contexts, args, device, dtype)
        ]
        print("\nper-token step time vs context (prompt prefilled in parallel mode; CPU time)")
        print(
            common.format_table(
                rows, ["layer", "context", "batch", "prefill_s", "ms_per_token_median", "ms_per_token_min"]
            )
        )
        extra["vs_context"] = rows
    if args.lengths in ("", "0"):
        if args.json:
            common.save_json(args.json, {"environment": env, "args": vars(args).copy() | {"func": None}, **extra})
        return 0
    print(
        f"d_model={args.d_model}, n_layer={args.n_layer}, batch={args.batch}, prompt={args.prompt_length}, "
        f"dtype={args.dtype}, greedy; latency = median (min) step time over the first / last 10% of positions"
    )
    rows = [measure(layer, n, args, device, dtype) for n in lengths for layer in layers]
    print(
        common.format_table(
            rows,
            [
                "layer",
                "new_tokens",
                "tokens_per_s",
                "latency_first_ms",
                "latency_last_ms",
                "min_first_ms",
                "min_last_ms",
                "last_over_first",
                "prompt_ms",
                "state_MB",
                "params_M",
            ],
        )
    )
    if args.json:
        common.save_json(
            args.json, {"environment": env, "args": vars(args).copy() | {"func": None}, "results": rows, **extra}
        )
        print(f"\nwrote {args.json}")
    return 0
