"""``torchssm rl train`` / ``eval``: PPO runs from a YAML config, with JSONL metrics, checkpoints and resume.

Config (a preset under ``torchssm/presets/rl/`` or any YAML file; ``--set section.key=value`` overrides):

    env: RepeatPreviousEasy          # a POPGym class name (torchssm rl envs), or meta: {...} (rl/meta.py)
    env_kwargs: {}                   # passed to the environment's constructor
    seed: 0
    model: {memory: lru, d_model: 64, n_layers: 1, hidden: 128, memory_kwargs: {d_state: 64}}
    ppo: {lr: ..., num_envs: ..., ...}          # PPOConfig (rl/ppo.py), defaults from popjaxrl
    run: {checkpoint_every: 10, eval_episodes: 100, threads: 1}

A run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per PPO iteration: env steps, mean
episode return of the episodes finished in the rollout, losses, CPU seconds), ``last/`` (the checkpoint of
``torchssm.train.checkpoint``: weights, optimizer, RNG states, iteration; written atomically) and
``eval.json`` after ``torchssm rl eval``. ``--resume`` continues from ``last/``: weights, optimizer, RNG
states and counters are restored and ``metrics.jsonl`` is cut back to the checkpoint; the environments
restart fresh episodes (their internal state is not saved), the only difference from an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from torchssm import presets
from torchssm.fileio import atomic_write_json, atomic_write_text
from torchssm.rl.envs import BatchedEnv
from torchssm.rl.policy import RecurrentActorCritic
from torchssm.rl.ppo import PPOConfig, RolloutCollector, evaluate, make_optimizer, ppo_update

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "rl"
SECTIONS = ("env", "env_kwargs", "seed", "model", "ppo", "run", "meta")


@dataclass
class ModelSpec:
    """The policy: memory name and sizes (see :class:`RecurrentActorCritic`)."""

    memory: str = "lru"
    d_model: int = 64
    n_layers: int = 1
    hidden: int = 128
    memory_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    checkpoint_every: int = 10  # PPO iterations between checkpoints (and at the end)
    eval_episodes: int = 100  # episodes of `torchssm rl eval` (and the final evaluation)
    eval_envs: int = 16
    threads: int = 1  # torch.set_num_threads (CPU runs on a shared machine)


@dataclass
class RLConfig:
    env: str | None = "RepeatPreviousEasy"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunSpec = field(default_factory=RunSpec)
    meta: dict[str, Any] | None = None  # the meta-RL task's options (rl/meta.py MetaConfig)

    @classmethod
    def from_dict(cls, data: dict) -> RLConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; expected {list(SECTIONS)}")

        def build(kind, raw, name):
            raw = raw or {}
            if not isinstance(raw, dict):
                raise ValueError(f"config section {name!r} must be a mapping, got {raw!r}")
            known = {f.name for f in fields(kind)}
            bad = sorted(set(raw) - known)
            if bad:
                raise ValueError(f"unknown {name} config key(s) {bad}; valid keys: {sorted(known)}")
            return kind(**raw)

        cfg = cls(
            env=data.get("env", cls.env),
            env_kwargs=dict(data.get("env_kwargs") or {}),
            seed=int(data.get("seed", 0)),
            model=build(ModelSpec, data.get("model"), "model"),
            ppo=PPOConfig.from_dict(data.get("ppo") or {}),
            run=build(RunSpec, data.get("run"), "run"),
            meta=data.get("meta"),
        )
        if cfg.meta is None and not cfg.env:
            raise ValueError("config needs `env: <POPGym name>` or a `meta:` section")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def list_presets():
    """Environment presets (``presets/rl/*.yaml``) and model presets (``presets/rl/models/*.yaml``)."""
    return presets.list_presets(PRESET_DIR, recursive=False), presets.list_presets(PRESET_DIR / "models")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a YAML mapping")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """``ppo.lr=1e-3`` / ``model.memory_kwargs.d_state=16`` / ``env=HigherLowerEasy`` (values are YAML)."""
    data = copy.deepcopy(data)
    for text in overrides or ():
        if "=" not in text:
            raise ValueError(f"--set expects key=value (e.g. ppo.lr=1e-3), got {text!r}")
        key, raw = text.split("=", 1)
        path = key.strip().split(".")
        if path[0] not in SECTIONS:
            raise ValueError(f"unknown config section {path[0]!r} in --set {text!r}; expected one of {list(SECTIONS)}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {text!r}: {part!r} is not a mapping")
        node[path[-1]] = value
    return data


def load_rl_config(
    preset: str | None = None, config: str | Path | None = None, overrides: Iterable[str] = (), model: str | None = None
) -> RLConfig:
    """An environment preset name or a YAML path, then a model preset's ``model:`` section (``model``),
    then ``--set`` overrides."""
    if preset and config:
        raise ValueError("give either --preset or --config, not both")
    data: dict = {}
    if preset:
        try:
            path = presets.preset_path(preset, PRESET_DIR, recursive=False)
        except ValueError:
            raise ValueError(f"unknown RL preset {preset!r}; available: {list_presets()[0]}") from None
        data = _read_yaml(path)
    elif config:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = _read_yaml(path)
    if model:
        try:
            path = presets.preset_path(model, PRESET_DIR / "models")
        except ValueError:
            raise ValueError(f"unknown RL model preset {model!r}; available: {list_presets()[1]}") from None
        data["model"] = _read_yaml(path)["model"]
    return RLConfig.from_dict(apply_overrides(data, overrides))


def build_env(cfg: RLConfig, num_envs: int, seed: int, heldout: bool = False):
    """The batched training environment: one POPGym env, or the meta-RL task (``cfg.meta``)."""
    if cfg.meta is not None:
        from torchssm.rl.meta import MetaConfig, MetaEnv

        return MetaEnv(MetaConfig.from_dict(cfg.meta), num_envs, seed=seed, heldout=heldout)
    if heldout:
        raise ValueError("held-out evaluation needs a meta-RL config (meta: section)")
    return BatchedEnv(cfg.env, num_envs, seed=seed, **cfg.env_kwargs)


def build_policy(cfg: RLConfig, env) -> RecurrentActorCritic:
    m = cfg.model
    return RecurrentActorCritic(
        env.obs_dim,
        env.action_spec,
        m.memory,
        d_model=m.d_model,
        n_layers=m.n_layers,
        hidden=m.hidden,
        memory_kwargs=m.memory_kwargs,
    )


def _write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _read_jsonl(path: Path):
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(
    cfg: RLConfig, out_dir: str | Path, resume: bool = False, progress: bool = True, max_iterations: int | None = None
) -> dict[str, Any]:
    """Run PPO (``cfg.ppo.num_updates`` iterations, or ``max_iterations``); returns the last metrics row."""
    from torchssm.cpu_threads import set_cpu_threads
    from torchssm.train.checkpoint import find_latest_checkpoint, load_checkpoint, save_checkpoint

    set_cpu_threads(cfg.run.threads)
    out = Path(out_dir)
    torch.manual_seed(cfg.seed)
    env = build_env(cfg, cfg.ppo.num_envs, seed=cfg.seed)
    policy = build_policy(cfg, env)
    optimizer = make_optimizer(policy, cfg.ppo)
    iteration, env_steps, cpu_used = 0, 0, 0.0
    metrics_path = out / "metrics.jsonl"
    if resume:
        ckpt = find_latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no intact checkpoint under {out}")
        state = load_checkpoint(ckpt, policy, optimizer, restore_rng=True)
        saved = {k: v for k, v in (state.get("config") or {}).items() if k != "run"}
        if saved != {k: v for k, v in cfg.to_dict().items() if k != "run"}:
            raise ValueError(
                f"--resume: the config (other than run:) differs from the checkpoint's ({ckpt}); "
                "resume with the same config"
            )
        iteration, env_steps, cpu_used = int(state["epoch"]), int(state["step"]), float(state.get("cpu_s", 0.0))
        _write_jsonl(metrics_path, [r for r in _read_jsonl(metrics_path) if r["iteration"] <= iteration])
        env = build_env(cfg, cfg.ppo.num_envs, seed=cfg.seed + 1000 * iteration)  # fresh episodes
    elif (out / "last").exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write_text(out / "config.yaml", text)
        _write_jsonl(metrics_path, [])
    ablation = cfg.meta is not None and bool(cfg.meta.get("reset_each_episode", False))
    collector = RolloutCollector(env, policy, also_reset_on="episode_done" if ablation else None)
    total = cfg.ppo.num_updates if max_iterations is None else min(max_iterations, cfg.ppo.num_updates)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=iteration, desc=f"rl {cfg.model.memory}", unit="it")
    row: dict[str, Any] = {}
    recent: list = []

    def checkpoint():
        save_checkpoint(
            out / "last",
            policy,
            optimizer,
            epoch=iteration,
            step=env_steps,
            cpu_s=cpu_used,
            config=cfg.to_dict(),
            metrics=row,
        )

    while iteration < total:
        t0 = time.process_time()
        if cfg.ppo.anneal_lr:  # popjaxrl linear_schedule: lr * (1 - update / num_updates)
            for group in optimizer.param_groups:
                group["lr"] = cfg.ppo.lr * (1.0 - iteration / cfg.ppo.num_updates)
        rollout = collector.collect(cfg.ppo.num_steps)
        stats = ppo_update(policy, optimizer, rollout, cfg.ppo)
        iteration += 1
        env_steps += cfg.ppo.num_steps * cfg.ppo.num_envs
        cpu_used += time.process_time() - t0
        recent = (recent + rollout.episode_returns)[-200:]
        row = {
            "iteration": iteration,
            "env_steps": env_steps,
            "cpu_s": round(cpu_used, 3),
            "episodes": len(rollout.episode_returns),
            "mean_return": (
                sum(rollout.episode_returns) / len(rollout.episode_returns) if rollout.episode_returns else None
            ),
            **{k: round(v, 6) for k, v in stats.items()},
        }
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if iteration % cfg.run.checkpoint_every == 0 or iteration == total:
            checkpoint()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ret=f"{sum(recent) / max(len(recent), 1):.3f}", steps=env_steps)
    if bar is not None:
        bar.close()
    if not (out / "last").exists():
        checkpoint()
    return row


def load_policy(run_dir: str | Path):
    """(policy, config, sidecar) of a run directory or checkpoint directory."""
    from torchssm.cpu_threads import set_cpu_threads
    from torchssm.train.checkpoint import find_latest_checkpoint, load_checkpoint, read_checkpoint_state

    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no run or checkpoint at {path}")
    ckpt = path if (path / "trainer_state.json").is_file() else find_latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"no intact checkpoint under {path}")
    cfg = RLConfig.from_dict(read_checkpoint_state(ckpt)["config"])
    set_cpu_threads(cfg.run.threads)  # as in training (idle numba workers slow torch ~100x on a loaded CPU)
    env = build_env(cfg, 1, seed=0)
    policy = build_policy(cfg, env)
    state = load_checkpoint(ckpt, policy)
    policy.eval()
    return policy, cfg, state


def evaluate_run(
    run_dir: str | Path,
    episodes: int | None = None,
    seed: int = 12345,
    greedy: bool = False,
    env_name: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on fresh episodes (another seed than training); writes eval.json."""
    policy, cfg, state = load_policy(run_dir)
    if env_name is not None:
        if cfg.meta is not None:
            raise ValueError("--env cannot replace the environment of a meta-RL run")
        cfg.env = env_name
    episodes = cfg.run.eval_episodes if episodes is None else episodes
    env = build_env(cfg, cfg.run.eval_envs, seed=seed)
    if env.obs_dim != policy.obs_dim or env.action_spec != policy.action_spec:
        raise ValueError(
            f"environment {cfg.env} (obs_dim {env.obs_dim}, {env.action_spec}) does not fit the "
            f"policy (obs_dim {policy.obs_dim}, {policy.action_spec})"
        )
    result = {
        "env": cfg.env,
        "memory": cfg.model.memory,
        "iteration": state.get("epoch"),
        "env_steps": state.get("step"),
        "greedy": greedy,
        **evaluate(policy, env, episodes, greedy),
    }
    run = Path(run_dir)
    if run.is_dir() and (run / "config.yaml").is_file():
        atomic_write_json(run / "eval.json", result, indent=1)
    return result
