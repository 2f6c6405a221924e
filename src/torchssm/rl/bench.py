"""CPU time of one PPO update step per memory and trajectory length, at equal memory parameter count.

One step = the parallel forward of ``batch`` trajectories of length L through the whole actor-critic (with
``reset`` at episode starts), the clipped PPO loss, backward, gradient clipping and an Adam step: the inner
loop of :func:`torchssm.rl.ppo.ppo_update`. Inputs are synthetic (random observations, actions, advantages)
because the update's cost does not depend on their values. Timed as process CPU time on one thread
(``time.process_time``) after one warm-up step, the median of ``repeats`` steps; memories are interleaved
per length so machine load affects all alike.

Each memory's width is chosen so that its parameter count (the memory alone; the encoder and heads are
the same MLPs for every memory) is the closest to ``target_params`` (d_model a multiple of 8).

Lu et al. 2023 report the >5x S5-over-GRU speed-up on an accelerator with JAX's parallel scan; here the
scans run on one CPU thread, where a parallel scan has no parallelism to exploit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from torchssm.fileio import atomic_write_json
from torchssm.rl.envs import ActionSpec
from torchssm.rl.memory import build_memory
from torchssm.rl.policy import RecurrentActorCritic
from torchssm.rl.ppo import PPOConfig, make_optimizer, ppo_loss

MEMORY_KWARGS = {
    "lru": {"d_state": 64},
    "s5": {"d_state": 64},
    "s4d": {"d_state": 64},
    "window_transformer": {"n_heads": 4, "window": 64},
}


def memory_params(name: str, d_model: int) -> int:
    return sum(p.numel() for p in build_memory(name, d_model, 1, **MEMORY_KWARGS.get(name, {})).parameters())


def width_for(name: str, target_params: int) -> int:
    """The d_model (multiple of 8, 8..1024) whose memory parameter count is closest to ``target_params``."""
    best, best_gap = 8, None
    for d in range(8, 1025, 8):
        n = memory_params(name, d)
        gap = abs(n - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = d, gap
        if n > target_params:
            break
    return best


def _update_step(policy, optimizer, batch, cfg: PPOConfig) -> None:
    obs, reset, actions, old_logp, adv, old_v, ret = batch
    head, value = policy(obs, None, reset)
    dist = policy.distribution(head)
    loss, _ = ppo_loss(
        dist.log_prob(actions),
        old_logp,
        adv,
        value,
        old_v,
        ret,
        dist.entropy(),
        cfg.clip_eps,
        cfg.vf_coef,
        cfg.ent_coef,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    optimizer.step()


def bench_ppo_update(
    memories: Sequence[str],
    lengths: Sequence[int],
    target_params: int = 100_000,
    batch: int = 8,
    repeats: int = 3,
    episode_length: int | None = None,
    obs_dim: int = 16,
    n_actions: int = 4,
    out: str | None = None,
    seed: int = 0,
) -> dict:
    """CPU seconds per PPO update step: ``{"rows": [{memory, d_model, params, length, cpu_s}], ...}``.

    ``episode_length``: resets every that many steps (None: one episode per trajectory, the in-context
    RL setting of long trials)."""
    from torchssm.cpu_threads import set_cpu_threads

    set_cpu_threads(1, 1)
    torch.manual_seed(seed)
    spec = ActionSpec("discrete", n=n_actions)
    cfg = PPOConfig()
    models = {}
    for name in memories:
        d = width_for(name, target_params)
        policy = RecurrentActorCritic(obs_dim, spec, name, d_model=d, hidden=64, memory_kwargs=MEMORY_KWARGS.get(name))
        models[name] = (policy, make_optimizer(policy, cfg), d, memory_params(name, d))
    rows: list[dict] = []
    for length in lengths:
        g = torch.Generator().manual_seed(seed + length)
        reset = torch.zeros(batch, length, dtype=torch.bool)
        reset[:, 0] = True
        if episode_length:
            reset[:, ::episode_length] = True
        data = (
            torch.randn(batch, length, obs_dim, generator=g),
            reset,
            torch.randint(0, n_actions, (batch, length), generator=g),
            torch.full((batch, length), -float(torch.log(torch.tensor(float(n_actions))))),
            torch.randn(batch, length, generator=g),
            torch.randn(batch, length, generator=g),
            torch.randn(batch, length, generator=g),
        )
        times: dict[str, list[float]] = {name: [] for name in memories}
        for name in memories:  # warm-up (numba compilation, allocator)
            _update_step(models[name][0], models[name][1], data, cfg)
        for _ in range(repeats):
            for name in memories:
                t0 = time.process_time()
                _update_step(models[name][0], models[name][1], data, cfg)
                times[name].append(time.process_time() - t0)
        for name in memories:
            _, _, d, params = models[name]
            rows.append(
                {
                    "memory": name,
                    "d_model": d,
                    "params": params,
                    "length": length,
                    "cpu_s": statistics.median(times[name]),
                    "all_cpu_s": times[name],
                }
            )
            print(f"{name:20s} d={d:4d} params={params:7d} L={length:5d} cpu {rows[-1]['cpu_s']:.3f} s", flush=True)
    result = {
        "rows": rows,
        "batch": batch,
        "repeats": repeats,
        "episode_length": episode_length,
        "target_params": target_params,
        "threads": 1,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "markdown": markdown(rows),
    }
    if out:
        atomic_write_json(out, result, indent=1)
    return result


def markdown(rows: list[dict]) -> str:
    """memory x length table of CPU seconds per update step, with the ratio to the GRU where measured."""
    memories = list(dict.fromkeys(r["memory"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    cpu = {(r["memory"], r["length"]): r["cpu_s"] for r in rows}
    meta = {r["memory"]: (r["d_model"], r["params"]) for r in rows}
    lines = [
        "| memory | d_model | params | " + " | ".join(f"L={n}" for n in lengths) + " |",
        "|---|---|---|" + "---|" * len(lengths),
    ]
    for m in memories:
        cells = []
        for n in lengths:
            s = f"{cpu[(m, n)]:.3f}"
            if ("gru", n) in cpu and m != "gru":
                s += f" ({cpu[('gru', n)] / cpu[(m, n)]:.2f}x GRU)"
            cells.append(s)
        lines.append(f"| {m} | {meta[m][0]} | {meta[m][1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_bench(result: dict, path: str) -> str:
    """CPU seconds per update step vs trajectory length, one line per memory (log-log)."""
    from torchssm.analysis.plots import new_figure, save_figure

    fig, (ax,) = new_figure()
    for m in dict.fromkeys(r["memory"] for r in result["rows"]):
        pts = sorted((r["length"], r["cpu_s"]) for r in result["rows"] if r["memory"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("trajectory length L")
    ax.set_ylabel("CPU s per PPO update step (1 thread)")
    ax.set_title(f"PPO update, batch {result['batch']}, ~{result['target_params'] // 1000}k memory params")
    ax.legend()
    return save_figure(fig, path)
