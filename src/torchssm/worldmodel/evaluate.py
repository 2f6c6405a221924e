"""Training and the S4WM evaluations (Deng et al. 2023, Sec. 4) on MiniGrid episodes:

* imagined-frame error vs horizon: observe C frames of a held-out segment, imagine the rest from the true
  actions (prior means, step mode); error = fraction of the 7 x 7 cells whose object type is wrong, per step
  after the context (S4WM reports image MSE on its 3-D tasks; MiniGrid frames are symbolic, so a cell error);
  the "copy the last context frame" forecast is the floor a model must beat;
* recall (a MiniGrid analogue of S4WM's context-dependent recall; the exact protocol of the paper's
  teleport environments is UNVERIFIED here): after a random-walk context, a look-back excursion of N steps
  (turn around, wait N - 4 steps, turn back), so the true frame at its end is the last context frame, seen
  once N steps before while every frame in between faces the other way: the error of the imagined frame at
  the end, for growing N, beside the best constant frame (no memory); the frames come from the real
  environment. (A spin of four lefts, the first probe, only needed the last 4 imagined frames at any N.)
* reward prediction: squared error of the predicted reward, teacher-forced, on all held-out steps and on the
  steps with a reward;
* imagination speed: CPU seconds per imagined step after contexts of growing length (the Transformer's
  KV-cache step grows with the position, an SSM's does not).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from torchssm.checks import unit_interval
from torchssm.timeseries.fit import write_json
from torchssm.train.optim import build_optimizer
from torchssm.train.schedule import build_scheduler
from torchssm.worldmodel.envs import LEFT, check_action_space, lookback_actions, make_env, run_episode
from torchssm.worldmodel.model import WorldModel, WorldModelConfig


def rewarded_windows(data: dict) -> torch.Tensor:
    """Indices of the windows with at least one rewarded step (r != 0), (m,) long."""
    return (data["rewards"] != 0).any(dim=1).nonzero()[:, 0]


def _check_rewarded(rewarded: torch.Tensor | None) -> None:
    if rewarded is None or rewarded.numel() == 0:
        raise ValueError(
            "reward oversampling needs windows with a rewarded step; there are none (the goal reward is on an "
            "episode's final frame: cut the windows with end_window=True / --end-windows)"
        )


def sample_batch(
    n: int, batch_size: int, generator: torch.Generator, rewarded: torch.Tensor | None = None, fraction: float = 0.0
) -> torch.Tensor:
    """Window indices of one batch: uniform over the ``n`` windows, except that round(``fraction`` x batch_size)
    of them are drawn uniformly from ``rewarded`` (oversampling the rare windows with a goal reward).
    ``fraction`` = 0 draws exactly what a plain ``torch.randint(n, (batch_size,))`` draws."""
    k = round(fraction * batch_size)
    if k == 0:
        return torch.randint(n, (batch_size,), generator=generator)
    _check_rewarded(rewarded)
    picked = rewarded[torch.randint(rewarded.numel(), (k,), generator=generator)]
    return torch.cat([picked, torch.randint(n, (batch_size - k,), generator=generator)])


def train_world_model(
    model: WorldModel,
    data: dict,
    *,
    steps: int = 500,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 100,
    reward_fraction: float = 0.0,
) -> dict:
    """AdamW (layer conventions via param_groups), warm-up + cosine, clip 100 (Dreamer's grad clip).
    ``reward_fraction``: the share of each batch drawn from the windows with a rewarded step
    (:func:`sample_batch`; 0, the default, samples every window alike). The reward loss weight is the model
    config's ``reward_weight``."""
    unit_interval("reward_fraction", reward_fraction, "a fraction of the windows")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = build_optimizer(model, lr, weight_decay=0.0)
    sched = build_scheduler(opt, steps, warmup_steps=max(1, steps // 20))
    n = data["obs"].shape[0]
    rewarded = rewarded_windows(data) if reward_fraction > 0 else None
    if round(reward_fraction * batch_size):
        _check_rewarded(rewarded)  # before training, not at its first batch
    cpu, history = 0.0, []
    model.train()
    for step in range(1, steps + 1):
        idx = sample_batch(n, batch_size, gen, rewarded, reward_fraction)
        t0 = time.process_time()
        loss, metrics = model.loss(data["obs"][idx], data["actions"][idx], data["rewards"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        sched.step()
        cpu += time.process_time() - t0
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), **metrics})
    model.eval()
    return {"cpu_s": cpu, "history": history}


def cell_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Fraction of cells whose object type differs: (..., grid, grid, 3) x 2 -> (...)."""
    return (pred[..., 0] != true[..., 0]).float().mean((-1, -2))


@torch.no_grad()
def imagination_error(model: WorldModel, data: dict, context: int) -> dict:
    """Per-horizon cell error of imagined frames (and of copying the last context frame), averaged."""
    obs, actions = data["obs"], data["actions"]
    out = model.imagine(obs[:, :context], actions)
    err = cell_error(out["frames"][:, context:], obs[:, context:]).mean(0)  # (T - C,)
    copy = cell_error(obs[:, context - 1 : context].expand_as(obs[:, context:]), obs[:, context:]).mean(0)
    recon = cell_error(out["frames"][:, :context], obs[:, :context]).mean()
    return {"horizon_error": err.tolist(), "copy_last_error": copy.tolist(), "context_recon_error": float(recon)}


def recall_episodes(env_name: str, n: int, context: int, gap: int, seed: int = 10_000) -> dict:
    """Real frames for the recall test: a random walk of ``context`` - 1 moves (C frames), then a look-back
    excursion of ``gap`` = N steps (:func:`torchssm.worldmodel.envs.lookback_actions`: turn around, wait
    N - 4 steps, turn back). Only walks that do not end the episode are kept; the last frame is checked to
    equal the last context frame (same pose in a static grid)."""
    env = make_env(env_name)
    obs: list = []
    acts: list = []
    rng = np.random.default_rng(seed)
    i = 0
    while len(obs) < n:
        walk = [int(a) for a in rng.choice(3, size=context - 1, p=[0.25, 0.25, 0.5])]  # left/right/forward
        ep = run_episode(env, "random", seed=seed + i, actions=walk + lookback_actions(gap))
        i += 1
        if len(ep["actions"]) == context - 1 + gap:  # did not end early
            obs.append(ep["obs"])
            acts.append(np.concatenate([ep["actions"], [LEFT]]))  # a_T for the last frame (unused)
    env.close()
    frames = torch.as_tensor(np.stack(obs)).long()  # (n, C + N, 7, 7, 3)
    if not bool((frames[:, -1] == frames[:, context - 1]).all()):
        raise RuntimeError(f"{env_name}: a look-back excursion did not return the view it started from")
    return {"obs": frames, "actions": torch.as_tensor(np.stack(acts)).long()}


def majority_frame(obs: torch.Tensor) -> torch.Tensor:
    """(n, T, grid, grid, 3) frames -> (grid, grid, 3): the most frequent value per cell and channel (the best
    constant frame; what a model that remembers nothing of the episode can do at best, cell by cell)."""
    flat = obs.reshape(-1, *obs.shape[-3:])
    return torch.mode(flat, dim=0).values


@torch.no_grad()
def recall_error(model: WorldModel, env_name: str, n: int, context: int, gaps=(4, 8, 16, 32), reference=None) -> dict:
    """Cell error of the imagined frame at the end of a look-back excursion of N steps (the true frame is the
    last context frame, seen N steps before; the excursion's frames face the other way) for each N.
    ``reference`` (grid, grid, 3), e.g. :func:`majority_frame` of the training data: its error on the same
    frames is returned as the memoryless level, ``{N: {"model": err, "memoryless": err}}``."""
    out = {}
    for gap in gaps:
        ep = recall_episodes(env_name, n, context, gap)
        obs, actions = ep["obs"], ep["actions"]
        im = model.imagine(obs[:, :context], actions)
        out[gap] = {"model": float(cell_error(im["frames"][:, -1], obs[:, -1]).mean())}
        if reference is not None:
            out[gap]["memoryless"] = float(cell_error(reference.expand_as(obs[:, -1]), obs[:, -1]).mean())
    return out


@torch.no_grad()
def reward_error(model: WorldModel, data: dict) -> dict:
    pred = model(data["obs"], data["actions"], sample=False)["reward"]
    r = data["rewards"]
    hit = r != 0
    return {
        "reward_mse": float((pred - r).square().mean()),
        "rewarded_steps": int(hit.sum()),
        "reward_mse_on_rewarded": float((pred - r)[hit].square().mean()) if hit.any() else None,
        # a model that predicts the reward everywhere would look good on the rewarded steps alone
        "reward_mse_on_unrewarded": float(pred[~hit].square().mean()) if (~hit).any() else None,
        "reward_max_on_unrewarded": float(pred[~hit].abs().max()) if (~hit).any() else None,
    }


@torch.no_grad()
def imagination_speed(
    config: WorldModelConfig, contexts=(64, 256, 1024), steps: int = 32, batch: int = 1, prefill_chunk: int = 512
) -> dict:
    """CPU ms per imagined step (backbone step, prior, decoder) after a teacher-forced context of each length
    (random weights: the cost does not depend on them). The context is fed in chunks of ``prefill_chunk``
    steps with the carried state (chunked continuation), so attention never builds a C x C matrix."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(**{**config.to_dict(), "max_len": max(contexts) + steps + 1})
    model = WorldModel(cfg).eval()
    out = {}
    for C in contexts:
        obs = torch.randint(0, 3, (batch, C, cfg.grid, cfg.grid, 3))  # (b, C, 7, 7, 3)
        actions = torch.randint(0, cfg.n_actions, (batch, C))
        q_mean, _ = model.posterior(obs)  # (b, C, d_latent)
        g = model.backbone_inputs(q_mean, actions)  # (b, C, d_model)
        state = model.init_state(batch)
        for s in range(0, C, prefill_chunk):
            _, state = model.backbone(g[:, s : s + prefill_chunk], state=state, return_state=True)
        z, a = q_mean[:, -1], actions[:, -1]
        t0 = time.process_time()
        for _ in range(steps):
            h, (pm, _), state = model.step(z, a, state)
            z = pm
            model.decode(z, h)
        out[C] = 1e3 * (time.process_time() - t0) / steps
    return out


def run(
    data_dir,
    *,
    backbones=("lru", "s4d", "mamba", "transformer", "gru"),
    env_name: str = "MiniGrid-MemoryS7-v0",
    steps: int = 500,
    context: int = 16,
    d_model: int = 64,
    segment: int = 64,
    recall_gaps=(4, 8, 16, 32),
    speed_contexts=(64, 256, 1024),
    end_windows: bool = False,
    reward_weight: float = 1.0,
    reward_fraction: float = 0.0,
    seed: int = 0,
    out=None,
) -> dict:
    """Train every backbone on ``data_dir``/train episodes, evaluate on ``data_dir``/test; return the results.
    ``reward_weight`` (the reward term's weight in the loss) and ``reward_fraction`` (the share of each batch
    drawn from windows with a rewarded step) default to the plain ELBO + reward loss with uniform windows."""
    from torchssm.worldmodel.envs import load_episodes, segments

    torch.set_num_threads(1)
    env = make_env(env_name)
    cfg0 = WorldModelConfig(d_model=d_model, d_hidden=2 * d_model, d_latent=16, reward_weight=reward_weight)
    check_action_space(env.action_space, cfg0.n_actions)
    env.close()
    if context + max(recall_gaps) > segment:
        raise ValueError(f"context {context} + longest recall gap {max(recall_gaps)} exceeds the segment {segment}")
    # end_windows: also the window ending on each episode's final frame, the only one with a goal reward
    train = segments(load_episodes(f"{data_dir}/train"), segment, end_window=end_windows)
    test = segments(load_episodes(f"{data_dir}/test"), segment, end_window=end_windows)
    reference = majority_frame(train["obs"])  # (7, 7, 3): the best constant frame
    memoryless = cell_error(reference.expand_as(test["obs"][:, context:]), test["obs"][:, context:]).mean(0)
    rows = []
    for bb in backbones:
        torch.manual_seed(seed)
        cfg = WorldModelConfig(**{**cfg0.to_dict(), "backbone": bb})
        model = WorldModel(cfg)
        fit = train_world_model(model, train, steps=steps, seed=seed, reward_fraction=reward_fraction)
        row = {
            "backbone": bb,
            "params": sum(p.numel() for p in model.parameters()),
            "train_cpu_s": fit["cpu_s"],
            "final": fit["history"][-1],
            "history": fit["history"],
            **imagination_error(model, test, context),
            "recall": recall_error(model, env_name, 64, context, recall_gaps, reference=reference),
            **reward_error(model, test),
            "step_ms": imagination_speed(cfg, speed_contexts) if speed_contexts else {},
        }
        rows.append(row)
        skip = ("horizon_error", "copy_last_error", "history")
        print(json.dumps({k: v for k, v in row.items() if k not in skip}), flush=True)
    result = {
        "env": env_name,
        "steps": steps,
        "context": context,
        "d_model": d_model,
        "n_train_segments": int(train["obs"].shape[0]),
        "n_test_segments": int(test["obs"].shape[0]),
        "segment": segment,
        "end_windows": end_windows,
        "reward_weight": reward_weight,
        "reward_fraction": reward_fraction,
        "n_rewarded_train_windows": int(rewarded_windows(train).numel()),
        "seed": seed,
        "memoryless_horizon_error": memoryless.tolist(),
        "rows": rows,
    }
    if out:
        write_json(out, result)
    return result


def format_tables(result: dict, horizons=(1, 4, 8, 16, 32, 48)) -> str:
    """Markdown: the imagination-error table (with the copy-last-frame and best-constant-frame references) and
    the recall table (with the memoryless level) of :func:`run`'s result (or of several merged runs)."""
    rows, C = result["rows"], result["context"]

    def cells(e):
        return " | ".join(f"{e[h - 1]:.3f}" if h - 1 < len(e) else "" for h in horizons)

    head = " | ".join(f"err@{h}" for h in horizons)
    lines = [
        f"| backbone | params | train CPU s | final KL (nats) | context recon err | {head} | reward MSE |",
        "|---" * (len(horizons) + 6) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['params']} | {r['train_cpu_s']:.0f} | {r['final']['kl']:.2f} | "
            f"{r['context_recon_error']:.3f} | {cells(r['horizon_error'])} | {r['reward_mse']:.2e} |"
        )
    lines.append(f"| copy last context frame | | | | | {cells(rows[0]['copy_last_error'])} | |")
    if "memoryless_horizon_error" in result:
        lines.append(f"| best constant frame | | | | | {cells(result['memoryless_horizon_error'])} | |")
    gaps = sorted(rows[0]["recall"], key=int)
    lines += [
        "",
        "| backbone | " + " | ".join(f"recall err N={g}" for g in gaps) + " |",
        "|---" * (len(gaps) + 1) + "|",
    ]
    for r in rows:
        lines.append(f"| {r['backbone']} | " + " | ".join(f"{r['recall'][g]['model']:.3f}" for g in gaps) + " |")
    rec0 = rows[0]["recall"]
    if all("memoryless" in rec0[g] for g in gaps):
        lines.append(
            "| best constant frame (no memory) | " + " | ".join(f"{rec0[g]['memoryless']:.3f}" for g in gaps) + " |"
        )
    if any(r["step_ms"] for r in rows):
        ctxs = sorted(rows[0]["step_ms"], key=int)
        lines += [
            "",
            "| backbone | " + " | ".join(f"step ms @ctx {c}" for c in ctxs) + " |",
            "|---" * (len(ctxs) + 1) + "|",
        ]
        for r in rows:
            lines.append(f"| {r['backbone']} | " + " | ".join(f"{r['step_ms'][c]:.2f}" for c in ctxs) + " |")
    lines.append(
        f"\nContext C = {C} frames, segments of {result['segment']} steps; err@h = fraction of 7x7 cells with a wrong "
        f"object type h steps after the context; recall err N = the same for the frame at the end of a look-back "
        f"excursion of N steps (seen once, N steps before)."
    )
    return "\n".join(lines)


def plot_horizon_error(results: list, path) -> str:
    """Imagined-frame cell error vs steps after the context, one line per backbone (and the copy baseline),
    from the results of :func:`run` (one or several runs' ``rows``)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    fig, (ax,) = new_figure(size=(6.0, 4.0))
    for row in results:
        e = row["horizon_error"]
        ax.plot(range(1, len(e) + 1), e, label=row["backbone"])
    copy = results[0]["copy_last_error"]
    ax.plot(range(1, len(copy) + 1), copy, "k--", label="copy last context frame")
    ax.set_xlabel("steps imagined after the context")
    ax.set_ylabel("cell error (wrong object type)")
    ax.set_ylim(0, None)
    legend(ax)
    return save_figure(fig, path)
