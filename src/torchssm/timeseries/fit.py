"""Shared pieces of the time-series experiments: the compared sequence models at a matched parameter count,
a small regression fit loop with a fixed step budget, and CPU timing.

Models (all map (b, L, m) -> (b, L, d_output), causal):

* ``flat:<layer>``: :class:`torchssm.models.backbone.DeepSSM` with per-step outputs (pooling "none") and any
  registered layer (``lru``, ``s5``, ``mamba``, ``transformer``, ...);
* ``lstm``: :class:`SequenceLSTM` (Hochreiter & Schmidhuber 1997; ``torch.nn.LSTM``), a linear encoder and head;
* ``hiss:<low>/<high>``: :class:`torchssm.timeseries.hiss.HiSS` (per-chunk outputs).

A name may carry architecture options after ``@`` (each a tuning configuration of its own, so that every model
can be given the same number of them): ``flat:mamba@n_layers=3``, ``flat:s5@dropout=0.1``,
``hiss:s5/s5@pool=mean``, ``hiss:s5/s5@n_low=2@pool=mean``, ``lstm@n_layers=3``. Keys: ``n_layers`` (flat /
LSTM depth; HiSS: high-level depth), ``dropout`` (flat), ``n_low`` and ``pool`` (HiSS, Sec. 4 of the paper:
low-level depth, chunk feature ``last`` / ``mean``). :func:`split_options` parses them.

The fit loop is the same for every model: AdamW over :func:`torchssm.train.optim.param_groups` (each layer's
optimizer conventions), warm-up + cosine schedule (:func:`torchssm.train.schedule.build_scheduler`),
gradient clipping at 1, evaluation on the validation set every ``eval_every`` steps, best weights kept.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from torchssm.data.loaders import iterate_batches
from torchssm.fileio import atomic_write
from torchssm.models.backbone import DeepSSM
from torchssm.models.config import ModelConfig
from torchssm.timeseries.hiss import POOLS, HiSS, HiSSConfig
from torchssm.train.optim import build_optimizer
from torchssm.train.schedule import build_scheduler


class SequenceLSTM(nn.Module):
    """Linear encoder -> ``n_layers`` LSTM -> linear head, per step: (b, L, m) -> (b, L, d_output)."""

    def __init__(self, d_input: int, d_output: int, d_model: int = 64, n_layers: int = 2):
        super().__init__()
        self.encoder = nn.Linear(d_input, d_model)
        self.lstm = nn.LSTM(d_model, d_model, num_layers=n_layers, batch_first=True)
        self.head = nn.Linear(d_model, d_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.encoder(x))[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


OPTION_KEYS = {"n_layers": int, "dropout": float, "n_low": int, "pool": str}
_OPTIONS_FOR = {"lstm": ("n_layers",), "flat": ("n_layers", "dropout"), "hiss": ("n_layers", "n_low", "pool")}


def split_options(kind: str) -> tuple[str, dict]:
    """``"flat:mamba@n_layers=3@dropout=0.1"`` -> ``("flat:mamba", {"n_layers": 3, "dropout": 0.1})``."""
    base, *parts = kind.split("@")
    family = "lstm" if base == "lstm" else base.partition(":")[0]
    options: dict = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or key not in OPTION_KEYS:
            raise ValueError(
                f"bad model option {part!r} in {kind!r}; expected key=value with key in {list(OPTION_KEYS)}"
            )
        if key not in _OPTIONS_FOR.get(family, ()):
            raise ValueError(
                f"option {key!r} does not apply to {base!r}; it takes {list(_OPTIONS_FOR.get(family, ()))}"
            )
        try:
            options[key] = OPTION_KEYS[key](value)
        except ValueError:
            raise ValueError(f"bad value {value!r} for option {key!r} in {kind!r}") from None
    if options.get("pool", "last") not in POOLS:
        raise ValueError(f"bad pool {options['pool']!r} in {kind!r}; expected one of {list(POOLS)}")
    return base, options


def build_sequence_model(
    kind: str,
    width: int,
    *,
    d_input: int,
    d_output: int,
    length: int,
    n_layers: int = 2,
    chunk: int = 10,
    state: int = 16,
) -> nn.Module:
    """One of the compared models (see the module docstring) at width ``width``; options after ``@`` override
    ``n_layers`` and set the others (:func:`split_options`)."""
    kind, options = split_options(kind)
    n_layers = options.pop("n_layers", n_layers)
    if kind == "lstm":
        return SequenceLSTM(d_input, d_output, width, n_layers)
    if kind.startswith("hiss:"):
        low, _, high = kind[5:].partition("/")
        return HiSS(
            HiSSConfig(
                d_input=d_input,
                d_output=d_output,
                chunk=chunk,
                low_layer=low,
                d_low=width,
                n_low=options.get("n_low", 1),
                pool=options.get("pool", "last"),
                low_kwargs=_layer_kwargs(low, width, chunk, state),
                high_layer=high or low,
                d_high=width,
                n_high=n_layers,
                high_kwargs=_layer_kwargs(high or low, width, length // chunk, state),
            )
        )
    if kind.startswith("flat:"):
        layer = kind[5:]
        return DeepSSM(
            ModelConfig(
                layer=layer,
                d_model=width,
                n_layers=n_layers,
                norm="layer",
                pooling="none",
                dropout=options.get("dropout", 0.0),
                d_input=d_input,
                d_output=d_output,
                layer_kwargs=_layer_kwargs(layer, width, length, state),
            )
        )
    raise ValueError(f"unknown model {kind!r}; expected 'lstm', 'flat:<layer>' or 'hiss:<low>/<high>'")


def _layer_kwargs(layer: str, width: int, length: int, state: int) -> dict:
    if layer == "transformer":
        heads = 4 if width % 8 == 0 else 2
        return {"n_heads": heads, "max_len": max(length, 1)}
    if layer in ("lru", "s5", "s4d", "mamba"):
        return {"d_state": state}
    return {}


def width_for_budget(kind: str, budget: int, widths=range(8, 257, 2), **kwargs) -> int:
    """The width whose parameter count is closest to ``budget`` (equal-parameter comparisons)."""
    split_options(kind)  # a bad option is named here, not hidden behind "no width builds"
    best, best_gap = None, math.inf
    for w in widths:
        try:
            n = count_parameters(build_sequence_model(kind, w, **kwargs))
        except ValueError:
            continue  # e.g. heads that do not divide the width
        if abs(n - budget) < best_gap:
            best, best_gap = w, abs(n - budget)
    if best is None:
        raise ValueError(f"no width in {widths} builds model {kind!r}")
    return best


def fit_regression(
    model: nn.Module,
    train,
    val,
    loss_of: Callable,
    *,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    eval_every: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train ``model`` for ``steps`` optimizer steps; ``loss_of(model, batch) -> scalar``. Keeps the weights of
    the best validation loss. Returns {"val": best val loss, "steps": steps, "cpu_s": training CPU seconds}."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; got {steps}, {batch_size}")
    torch.manual_seed(seed)
    opt = build_optimizer(model, lr, weight_decay)
    sched = build_scheduler(opt, steps, warmup_steps=max(1, steps // 20))
    gen = torch.Generator().manual_seed(seed)
    best, best_state, step, cpu = math.inf, None, 0, 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, leave=False, desc=type(model).__name__)
    while step < steps:
        for batch in iterate_batches(train, batch_size, shuffle=True, generator=gen):
            t0 = time.process_time()
            model.train()
            loss = loss_of(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            cpu += time.process_time() - t0
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4g}")
            if step % eval_every == 0 or step == steps:
                v = evaluate_loss(model, val, loss_of)
                if v < best:
                    best, best_state = v, copy.deepcopy(model.state_dict())
            if step >= steps:
                break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"val": best, "steps": steps, "cpu_s": cpu}


@torch.no_grad()
def evaluate_loss(model: nn.Module | Callable, dataset, loss_of: Callable, batch_size: int = 64) -> float:
    """Mean of ``loss_of`` over ``dataset`` (weighted by batch size), in eval mode (``model`` may be a plain
    function, e.g. a baseline predictor)."""
    if isinstance(model, nn.Module):
        model.eval()
    total, n = 0.0, 0
    for batch in iterate_batches(dataset, batch_size):
        b = next(iter(batch.values())).shape[0]
        total += float(loss_of(model, batch)) * b
        n += b
    return total / max(n, 1)


@torch.no_grad()
def inference_cpu_seconds(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Median CPU seconds of one forward pass on ``x`` (eval mode, one warm-up)."""
    model.eval()
    model(x)
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        model(x)
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def write_json(path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (a reader never sees half a results file)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1)

    atomic_write(path, write)
