"""Weight averaging: one model whose weights are the mean of several checkpoints of one run.

    torchssm average RUN [--epochs 8 9 10] [--out DIR] [--data-dir D] [--overwrite]

    from torchssm.train.averaging import average_checkpoints, average_run
    weights = average_checkpoints(["run/checkpoints/epoch-000008", "run/checkpoints/epoch-000009"])
    out = average_run("run", epochs=[8, 9, 10], out="run/averaged-epochs-8-9-10")

This is the averaging step of stochastic weight averaging (SWA; Izmailov, Podoprikhin, Garipov, Vetrov, Wilson
2018, "Averaging Weights Leads to Wider Optima and Better Generalization", Section 3.2, "SWA algorithm"): the
uniform mean of points of ONE training trajectory, applied after training to the epoch checkpoints the run
kept (``train.keep_checkpoints``), not SWA's modified learning-rate schedule. Points of different runs (other
seeds) lie in different basins and their mean is not a trained model; only the architecture is checked here
(keys, shapes, dtypes and the checkpoints' model configs), so keep to one run.

- :func:`average_state_dicts`: floating-point and complex tensors are averaged in float64 / complex128 and cast
  back to their dtype. Integer and boolean tensors cannot be averaged: they must be equal in every checkpoint,
  except a batch norm's ``num_batches_tracked`` (a step counter), taken from the last checkpoint and reset by the
  re-estimation below.
- :func:`reestimate_batch_norm`: the mean of the weights is a new network whose activations the checkpoints'
  batch-norm running statistics do not describe; as the SWA paper (Section 3.2, "Batch normalization") does,
  they are recomputed in one extra pass over training data with the averaged weights. It calls
  ``torch.optim.swa_utils.update_bn``: running statistics reset, momentum None (PyTorch's cumulative average:
  each batch's mean and unbiased variance weighted equally), the model in training mode, so **dropout is on**
  during the pass, as in the SWA authors' ``bn_update`` (timgaripov/swa, utils.py) and in ``update_bn``: the
  running statistics a trained checkpoint carries were gathered the same way, in training passes with dropout
  on, so the re-estimated ones are the same quantity for the new weights. The dropout masks are drawn from
  ``seed`` inside ``torch.random.fork_rng`` (the global RNG state is left as it was).
- :func:`average_run`: a run's checkpoints -> one checkpoint directory (:func:`~torchssm.train.checkpoint.
  save_checkpoint`: files written atomically, the sidecar last) holding the averaged weights, the batch norms
  re-estimated in one pass over the run's training set (its task rebuilt from the config, batches of
  ``train.batch_size`` in a shuffled order of ``train.seed``, the loop's ``min_batch=2``), and the run's config,
  so ``load_run``, ``torchssm eval``, ``torchssm speech snr-sweep --checkpoint`` and ``kws-ensemble`` read it as
  any checkpoint. It has no optimizer state (it cannot be resumed) and no metrics (it was not evaluated).
  Given ONE checkpoint it keeps its weights and only re-estimates the batch norms: "PreciseBN" (Wu & Johnson
  2021, "Rethinking 'Batch' in BatchNorm", arXiv 2105.07576, its section on population statistics; section
  number UNVERIFIED), population statistics of the final weights in place of the exponential moving averages
  gathered while the weights were still moving.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from torchssm.runs import SNAPSHOTS, is_run_dir
from torchssm.train.checkpoint import SIDECAR, WEIGHTS, read_checkpoint_state, save_checkpoint

__all__ = ["average_checkpoints", "average_run", "average_state_dicts", "reestimate_batch_norm", "register"]

BN_COUNTER = "num_batches_tracked"  # nn.BatchNorm*'s step counter: not averaged (see the module docstring)


def _is_averaged(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The uniform mean of ``state_dicts`` (at least two, the same keys, shapes and dtypes): floating-point and
    complex tensors averaged in float64 / complex128 and cast back to their dtype; integer and boolean tensors
    must be equal in all (a ``ValueError`` otherwise), except ``*.num_batches_tracked``, taken from the last.
    ``names`` label the state dicts in error messages (default: "state dict 0", "state dict 1", ...)."""
    if isinstance(state_dicts, Mapping) or len(state_dicts) < 2:
        got = "a single state dict" if isinstance(state_dicts, Mapping) else f"{len(state_dicts)}"
        raise ValueError(f"averaging needs at least 2 state dicts / checkpoints, got {got}")
    labels = list(names) if names is not None else [f"state dict {i}" for i in range(len(state_dicts))]
    first, first_label = state_dicts[0], labels[0]
    for sd, label in zip(state_dicts[1:], labels[1:]):
        missing, extra = sorted(set(first) - set(sd)), sorted(set(sd) - set(first))
        if missing or extra:
            raise ValueError(f"{label} does not match {first_label}: missing keys {missing}, extra keys {extra}")
        for key, ref in first.items():
            t = sd[key]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(
                    f"{label} does not match {first_label}: {key!r} is {t.dtype} {tuple(t.shape)} there, "
                    f"{ref.dtype} {tuple(ref.shape)} in {first_label}"
                )
    out: dict[str, torch.Tensor] = {}
    for key, ref in first.items():
        if _is_averaged(ref):
            wide = torch.complex128 if ref.is_complex() else torch.float64
            total = torch.zeros(ref.shape, dtype=wide)
            for sd in state_dicts:
                total += sd[key].detach().to("cpu", wide)
            out[key] = (total / len(state_dicts)).to(ref.dtype)
        elif key.rsplit(".", 1)[-1] == BN_COUNTER:
            out[key] = state_dicts[-1][key].detach().cpu().clone()
        else:
            for sd, label in zip(state_dicts[1:], labels[1:]):
                if not torch.equal(sd[key].cpu(), ref.cpu()):
                    raise ValueError(
                        f"{key!r} ({ref.dtype}) differs between {first_label} and {label}: integer and boolean "
                        f"tensors cannot be averaged, they must be equal in every checkpoint"
                    )
            out[key] = ref.detach().cpu().clone()
    return out


def average_checkpoints(paths: Sequence) -> dict[str, torch.Tensor]:
    """The mean (:func:`average_state_dicts`) of the weights of checkpoint directories ``paths`` (at least two,
    each verified against its sidecar's sha256; ``torchssm train`` checkpoints must also have equal model
    configs). Returns a state dict for ``model.load_state_dict``; the batch norms' running statistics in it are
    the checkpoints' mean, to be re-estimated (:func:`reestimate_batch_norm`)."""
    if isinstance(paths, (str, Path)) or len(paths) < 2:
        raise ValueError(f"average_checkpoints needs a list of at least 2 checkpoint directories, got {paths!r}")
    paths = [Path(p) for p in paths]
    if len(set(paths)) != len(paths):
        raise ValueError(f"average_checkpoints got the same checkpoint twice: {[str(p) for p in paths]}")
    models = []
    state_dicts = []
    for path in paths:
        state = read_checkpoint_state(path)  # missing / torn / corrupt: its own one-line error
        models.append((state.get("config") or {}).get("model"))
        try:
            state_dicts.append(load_file(str(path / WEIGHTS)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"checkpoint {path} is corrupt: cannot read {WEIGHTS} ({err})") from None
    for path, model in zip(paths[1:], models[1:]):
        if model != models[0]:
            raise ValueError(
                f"checkpoint {path} has another model config than {paths[0]}: {model} vs {models[0]} "
                f"(only checkpoints of one run can be averaged)"
            )
    return average_state_dicts(state_dicts, names=[str(p) for p in paths])


class _BatchCaller(nn.Module):
    """``update_bn`` calls ``model(batch)``; torchssm batches are dicts, which ``forward_batch`` unpacks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> Any:
        from torchssm.train.losses import forward_batch

        return forward_batch(self.model, dict(batch)) if isinstance(batch, Mapping) else self.model(batch)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether any module of ``model`` is a batch norm (whose running statistics averaging must re-estimate)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def checkpoint_has_batch_norm(path) -> bool:
    """Whether checkpoint directory ``path`` holds batch-norm running statistics, read from its weights' keys
    alone (no model built, no data): a batch norm that tracks them saves a ``num_batches_tracked`` buffer, which
    among PyTorch's modules only its other norms with ``track_running_stats=True`` (instance norms, which this
    library does not use) also save. A batch norm without running statistics has nothing to re-estimate, so it
    counts as none here (unlike :func:`has_batch_norm`, which looks at the modules)."""
    read_checkpoint_state(path)  # a missing or corrupt checkpoint fails here with its own message
    with safe_open(str(Path(path) / WEIGHTS), framework="pt") as f:
        return any(key.endswith(".num_batches_tracked") for key in f.keys())


def reestimate_batch_norm(
    model: nn.Module,
    batches: Iterable,
    *,
    seed: int = 0,
    total: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> int:
    """Recompute the running statistics of every batch norm of ``model`` in one pass over ``batches`` (dicts as
    ``torchssm.data.loaders.iterate_batches`` yields them, or input tensors), with
    ``torch.optim.swa_utils.update_bn``: cumulative average, training mode (dropout on, masks drawn from
    ``seed``), no gradients; the model's mode and the batch norms' momenta are restored after, and the global
    RNG state is untouched. ``total``: the number of batches, for the progress bar (``progress``). Returns the
    number of batches seen (0 and nothing done when the model has no batch norm)."""
    from torch.optim.swa_utils import update_bn

    if not has_batch_norm(model):
        return 0
    count = 0
    source = iter(batches)
    first = next(source, None)
    if first is None:  # checked before update_bn resets the statistics
        raise ValueError("reestimate_batch_norm got no batches: nothing to estimate the batch-norm statistics on")

    def counted():
        nonlocal count
        chained = itertools.chain([first], source)
        bar = tqdm(chained, total=total, desc="batch-norm statistics", leave=False, disable=None if progress else True)
        for batch in bar:
            if isinstance(batch, Mapping) and device is not None:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            elif isinstance(batch, torch.Tensor) and device is not None:
                batch = batch.to(device)
            count += 1
            yield batch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.manual_seed(seed)
        modes = {m: m.training for m in model.modules()}  # update_bn restores the wrapper's mode, not these
        try:
            update_bn(counted(), _BatchCaller(model))
        finally:
            for m, mode in modes.items():
                m.training = mode
    return count


def snapshot_paths(run_dir, epochs: Sequence[int] | None = None) -> list[Path]:
    """The kept epoch checkpoints ``<run_dir>/checkpoints/epoch-NNNNNN`` of ``epochs`` (default: all kept)."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir} is not a run directory (expected the out_dir of torchssm train)")
    return kept_snapshots(run_dir, epochs)


def kept_snapshots(run_dir: Path, epochs: Sequence[int] | None = None) -> list[Path]:
    """:func:`snapshot_paths` without its check that ``run_dir`` is a ``torchssm train`` run (a speech recogniser's
    run keeps its snapshots the same way, ``torchssm speech average``)."""
    kept = {int(p.name.split("-", 1)[1]): p for p in sorted((run_dir / SNAPSHOTS).glob("epoch-*"))}
    if epochs is None:
        return [kept[e] for e in sorted(kept)]
    absent = [e for e in epochs if e not in kept]
    if absent:
        raise ValueError(
            f"{run_dir} kept no checkpoint of epoch(s) {absent} (kept: {sorted(kept) or 'none'}; "
            f"train.keep_checkpoints sets how many)"
        )
    return [kept[e] for e in epochs]


def check_average_output(out: Path, paths: Sequence, overwrite: bool) -> None:
    """ValueError unless ``out`` may receive the average of checkpoints ``paths``: it holds no checkpoint (or
    ``overwrite``), there is at least one path, and it is none of them."""
    if (out / SIDECAR).exists() and not overwrite:
        raise ValueError(f"{out} already holds a checkpoint (overwrite=True / --overwrite replaces it)")
    if not paths:
        raise ValueError("average_run got no checkpoints")
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise ValueError(f"the output {out} is one of the checkpoints averaged")


def averaged_dir(run_dir, paths: Sequence[Path]) -> Path:
    """The default output of averaging ``paths`` (epoch snapshots of ``run_dir``): ``<run_dir>/averaged-epochs-A-B``."""
    epochs = [int(Path(p).name.split("-", 1)[1]) for p in paths]
    return Path(run_dir) / f"averaged-epochs-{'-'.join(str(e) for e in epochs)}"


def average_run(
    checkpoints,
    out,
    *,
    epochs: Sequence[int] | None = None,
    data_dir=None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Average ``checkpoints`` (a list of checkpoint directories, or a run directory: its kept epochs
    ``epochs``, default all) into a checkpoint directory ``out`` (see the module docstring) and return ``out``.
    One checkpoint: its weights unchanged, only the batch norms re-estimated. The config, epoch and step
    written are the last checkpoint's; the sidecar adds ``averaged_from`` and ``batch_norm`` ({"batches",
    "examples", "dropout", "seed"})."""
    from torchssm.data.loaders import epoch_generator, iterate_batches, num_batches
    from torchssm.train.reload import load_run

    paths = snapshot_paths(checkpoints, epochs) if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    out = Path(out)
    check_average_output(out, paths, overwrite)
    if len(paths) == 1 and not checkpoint_has_batch_norm(paths[0]):  # refused before the task's data is built
        raise ValueError(
            f"one checkpoint of a model without batch norm ({paths[0]}): nothing to average or re-estimate"
        )
    weights = average_checkpoints(paths) if len(paths) > 1 else None  # one checkpoint: its own weights (PreciseBN)
    run = load_run(paths[-1], data_dir=data_dir)  # the last checkpoint's config, task (training set included) and model
    if weights is not None:
        run.model.load_state_dict(weights)
    tc = run.config.train
    train_set = run.task.train
    n_batches = num_batches(train_set, tc.batch_size, min_batch=2)
    # an order of the training set the run never drew (epoch index train.epochs), batches as the loop forms them
    batches = iterate_batches(
        train_set, tc.batch_size, shuffle=True, generator=epoch_generator(tc.seed, tc.epochs), min_batch=2
    )
    seen = reestimate_batch_norm(run.model, batches, seed=tc.seed, total=n_batches, progress=progress)  # 0: no BN
    run.model.eval()
    state = run.state
    examples = len(cast(Sized, train_set)) if seen else 0
    bn = {"batches": seen, "examples": examples, "dropout": "on (training mode)", "seed": tc.seed}
    save_checkpoint(
        out,
        run.model,
        config=state["config"],
        epoch=state.get("epoch"),
        step=state.get("step"),
        averaged_from=[str(p) for p in paths],
        batch_norm=bn if seen else None,
    )
    return out


# --- torchssm average ------------------------------------------------------------------------------------
def _run_average(args) -> int:
    cpu0 = time.process_time()
    if args.checkpoints:
        if args.epochs:
            raise ValueError("give RUN with --epochs, or --checkpoints, not both")
        if args.run is not None:
            raise ValueError("give RUN with --epochs, or --checkpoints, not both")
        if args.out is None:
            raise ValueError("--checkpoints needs --out DIR (where the averaged checkpoint goes)")
        source, paths = None, [Path(p) for p in args.checkpoints]
    else:
        if args.run is None:
            raise ValueError("torchssm average needs RUN (a run directory) or --checkpoints A B ...")
        source, paths = Path(args.run), snapshot_paths(args.run, args.epochs)
    if args.out is not None:
        out = Path(args.out)
    else:
        assert source is not None
        out = averaged_dir(source, paths)
    average_run(paths, out, data_dir=args.data_dir, overwrite=args.overwrite, progress=True)
    state = read_checkpoint_state(out)
    bn = state.get("batch_norm")
    bn_text = (
        f"batch-norm statistics re-estimated on {bn['batches']} training batches "
        f"({bn['examples']} examples, dropout on)"
        if bn
        else "no batch norm"
    )
    what = f"averaged {len(paths)} checkpoints" if len(paths) > 1 else "kept the weights of 1 checkpoint"
    print(f"{what} ({', '.join(str(p) for p in paths)}) -> {out}; {bn_text}; {time.process_time() - cpu0:.1f} s CPU")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "average",
        help="average the weights of one run's checkpoints into one checkpoint (SWA's averaging, after training)",
        description="The uniform mean of one run's epoch checkpoints, batch-norm statistics re-estimated in one "
        "pass over the run's training set (dropout on), written as a checkpoint directory. Given one checkpoint, "
        "its weights are kept and only the batch norms are re-estimated (PreciseBN); one checkpoint of a model "
        "without batch norm is refused (nothing to do).",
    )
    p.add_argument("run", nargs="?", default=None, help="a run directory (the out_dir of torchssm train)")
    p.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=None,
        metavar="E",
        help="which kept epoch checkpoints (RUN/checkpoints/epoch-E) to average (default: all kept)",
    )
    p.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        metavar="DIR",
        help="checkpoint directories instead of RUN (one: its batch norms re-estimated only)",
    )
    p.add_argument("--out", default=None, help="output checkpoint directory (default: RUN/averaged-epochs-E1-E2-...)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="data cache directory (default: $TORCHSSM_DATA or ~/.cache/torchssm)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already at --out")
    p.set_defaults(func=_run_average)
