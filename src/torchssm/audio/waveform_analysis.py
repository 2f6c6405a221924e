"""Bits per sample vs context length of waveform models (task ``spoken_mulaw``: :mod:`torchssm.audio.waveform`).

Bits per sample vs context length, four ways (the first three are functions of one trained model):
* :func:`bits_by_position`: the test bits per sample of one trained model by position in the window,
  in buckets [0, 2^8), [2^8, 2^9), ..., [L/2, L): the context a prediction has is its position.
  ``python -m torchssm.audio.waveform positions RUN`` prints it for a run of ``torchssm train``
  (``--out f.json``), ``... plot f.json g.json --out fig.png`` draws them (:func:`plot_positions`).
* :func:`bits_by_context` (``... context RUN``): the last samples of each test window scored with
  0, 256, 1024, ... samples of context before them: the same samples at every context length (paired);
  ``... plot`` draws these too (bits vs context, one line per run or checkpoint).
* :func:`bits_by_far_context` (``... swap RUN``): the same scored samples after the same ``near``
  samples, with the far context before those swapped: the window's own, another place of the same
  recording (same voice), another recording (another voice), or none. What the far context's speaker
  buys (same vs other voice) and what its continuity buys (own vs same voice), measured on one model.
* runs at several ``length`` with a fixed number of samples per batch (batch_size x length constant),
  as in Gu & Dao 2023, Sec. 4.4 / Fig. 4, each scored at its own length (``torchssm train`` runs);
  ``... lengths RUN [RUN ...] --figure fig.png`` tabulates their test bits (:func:`run_summary`) and
  draws them vs training length (:func:`plot_by_length`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torchssm.audio.dsp import mu_law_encode
from torchssm.audio.waveform import CHANNELS, spoken_mulaw_recordings, window_rng, window_sources
from torchssm.data.loaders import TensorDictDataset
from torchssm.runs import read_config, read_result

FIRST_BUCKET = 256  # positions [0, 256) form the first bucket of bits_by_position (this library's choice)


def position_edges(length: int, first: int = FIRST_BUCKET) -> list[int]:
    """Bucket edges [0, first, 2 first, 4 first, ..., length] (the last bucket ends at ``length``)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise ValueError(f"first must be a positive int, got {first!r}")
    edges = [0]
    edge = first
    while edge < length:
        edges.append(edge)
        edge *= 2
    return edges + [length]


def _window_codes(dataset: TensorDictDataset) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(inputs, targets, length) of a dataset of windows (:func:`mulaw_windows`): both (n, length) codes, n >= 1."""
    inputs, targets = dataset.tensors["inputs"], dataset.tensors["targets"]
    if inputs.ndim != 2 or inputs.shape != targets.shape or len(inputs) == 0:
        raise ValueError(
            f"expected inputs and targets of one shape (n, length) with n >= 1, got {tuple(inputs.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return inputs, targets, int(inputs.shape[1])


@torch.no_grad()
def bits_by_position(
    model: torch.nn.Module,
    dataset: TensorDictDataset,
    edges: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
) -> dict:
    """Mean bits per sample of ``model``'s next-code predictions on ``dataset``, by position in the window.

    ``dataset`` holds "inputs" and "targets" (n, L) codes (:func:`mulaw_windows`); ``model`` maps
    (b, L) codes to (b, L, 256) logits. Returns {"buckets": [{"start", "stop", "bits"}, ...] for the
    positions [start, stop) of ``edges`` (default :func:`position_edges`), "bits": the mean over every
    position, "n_windows", "length"}. Bits = cross-entropy in nats / ln 2, averaged over windows.
    """
    inputs, targets, length = _window_codes(dataset)
    edges = list(position_edges(length) if edges is None else edges)
    if len(edges) < 2 or edges[0] != 0 or edges[-1] != length or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must rise strictly from 0 to the window length {length}, got {edges}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros(length, dtype=torch.float64)
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size].to(device)
            y = targets[start : start + batch_size].to(device)
            logits = model(x)
            if logits.shape != (*x.shape, CHANNELS):
                raise ValueError(
                    f"model returned logits of shape {tuple(logits.shape)}, expected {(*x.shape, CHANNELS)}"
                )
            nll = F.cross_entropy(logits.transpose(1, 2).double(), y, reduction="none")  # (b, L)
            total += nll.sum(0).cpu()
    finally:
        model.train(was_training)
    per_position = total / (len(inputs) * math.log(2.0))
    buckets = [{"start": a, "stop": b, "bits": float(per_position[a:b].mean())} for a, b in zip(edges[:-1], edges[1:])]
    return {"buckets": buckets, "bits": float(per_position.mean()), "n_windows": len(inputs), "length": length}


@torch.no_grad()
def bits_by_context(
    model: torch.nn.Module,
    dataset: TensorDictDataset,
    contexts: Sequence[int],
    scored: int = 1024,
    device: str | torch.device = "cpu",
) -> dict:
    """Bits per sample of the same test samples given more or less context: a paired measurement.

    For each window of ``dataset`` ("inputs" / "targets" (n, L) codes) the last ``scored`` targets are
    scored; for each ``c`` in ``contexts`` the model reads only the ``c + scored`` inputs ending at the
    window's end, so sample j of the scored part has c + j samples of context. Unlike
    :func:`bits_by_position`, every context length is scored on the same samples, so the differences
    between contexts are not blurred by what the windows hold at each position. Returns {"contexts":
    [{"context", "bits"}, ...], "gains": [{"from", "to", "gain", "se"}, ...] (for each pair of
    consecutive contexts, the mean over windows of bits(from) - bits(to), so positive = fewer bits with
    more context, and its standard error over windows; nan with one window), "per_window": [[bits of each
    window] for each context], "scored", "n_windows", "length"}.
    """
    inputs, targets, length = _window_codes(dataset)
    if isinstance(scored, bool) or not isinstance(scored, int) or not 1 <= scored <= length:
        raise ValueError(f"scored must be an int in [1, {length}] (the window length), got {scored!r}")
    contexts = list(contexts)
    if not contexts or any(
        isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= length - scored for c in contexts
    ):
        raise ValueError(f"contexts must be ints in [0, {length - scored}] (window length - scored), got {contexts}")
    was_training = model.training
    model.eval()
    per_window = []
    try:
        for c in contexts:
            bits = []
            for i in range(len(inputs)):
                x = inputs[i : i + 1, length - scored - c :].to(device)
                logits = model(x)[:, -scored:]
                y = targets[i : i + 1, -scored:].to(device)
                nll = float(F.cross_entropy(logits.transpose(1, 2).double(), y, reduction="sum"))
                bits.append(nll / (scored * math.log(2.0)))
            per_window.append(bits)
    finally:
        model.train(was_training)
    rows = [{"context": c, "bits": float(np.mean(bits))} for c, bits in zip(contexts, per_window)]
    gains = []
    for (a, bits_a), (b, bits_b) in zip(zip(contexts, per_window), list(zip(contexts, per_window))[1:]):
        diff = np.asarray(bits_a) - np.asarray(bits_b)
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        gains.append({"from": a, "to": b, "gain": float(diff.mean()), "se": se})
    return {
        "contexts": rows,
        "gains": gains,
        "per_window": per_window,
        "scored": scored,
        "n_windows": len(inputs),
        "length": length,
    }


FAR_CONTEXTS = ("own", "same_voice", "other_voice", "none")


def far_context_inputs(
    recordings: Sequence[np.ndarray],
    sources: np.ndarray,
    length: int,
    near: int,
    scored: int,
    seed: int = 0,
) -> dict:
    """Inputs that score the same samples after the same near context but a different far context.

    Window i is ``recordings[k][start : start + length + 1]`` (``sources[i] = (k, start)``,
    :func:`window_sources`); its last ``scored`` targets are scored, after the ``near`` inputs before them;
    the ``far = length - near - scored`` inputs before those are, by condition: "own" (the window itself),
    "same_voice" (``far`` samples of the same recording, outside the window), "other_voice" (``far``
    samples of another recording, so another voice with ``recordings="voices"``), "none" (no far
    context: ``near + scored`` inputs). Places are drawn uniformly with ``numpy.random.default_rng(seed)``;
    a window whose recording holds no ``far`` samples outside it is left out (``skipped``). Returns
    {condition: (m, length) codes ("none": (m, near + scored)), "targets": (m, scored) codes,
    "kept": the m window indices, "other": the recording of each "other_voice" far context, "skipped",
    "far"}.
    """
    if isinstance(near, bool) or not isinstance(near, int) or near < 0:
        raise ValueError(f"near must be an int >= 0, got {near!r}")
    if isinstance(scored, bool) or not isinstance(scored, int) or scored < 1:
        raise ValueError(f"scored must be an int >= 1, got {scored!r}")
    far = length - near - scored
    if far < 1:
        raise ValueError(f"near + scored must be below the window length {length}, got {near} + {scored}")
    sources = np.asarray(sources, dtype=np.int64)
    if sources.ndim != 2 or sources.shape[1] != 2 or len(sources) == 0:
        raise ValueError(f"sources must be (n, 2) rows (recording, start) with n >= 1, got shape {sources.shape}")
    others = [k for k, r in enumerate(recordings) if len(r) >= far]
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in (*FAR_CONTEXTS, "targets")}
    kept, other_ids, skipped = [], [], 0
    for i, (k, start) in enumerate(sources.tolist()):
        recording = recordings[k]
        if start < 0 or start + length + 1 > len(recording):
            raise ValueError(f"window {i}: [{start}, {start + length + 1}) does not fit recording {k}")
        before, after = max(0, start - far + 1), max(0, len(recording) - far - (start + length + 1) + 1)
        candidates = [j for j in others if j != k]
        if before + after == 0 or not candidates:
            skipped += 1
            continue
        u = int(rng.integers(before + after))
        same_at = u if u < before else start + length + 1 + (u - before)
        j = candidates[int(rng.integers(len(candidates)))]
        other_at = int(rng.integers(len(recordings[j]) - far + 1))
        window = mu_law_encode(recording[start : start + length + 1], CHANNELS).astype(np.int64)
        tail = window[far:length]  # near + scored inputs
        rows["own"].append(window[:length])
        rows["same_voice"].append(np.concatenate([mu_law_encode(recording[same_at : same_at + far], CHANNELS), tail]))
        rows["other_voice"].append(
            np.concatenate([mu_law_encode(recordings[j][other_at : other_at + far], CHANNELS), tail])
        )
        rows["none"].append(tail)
        rows["targets"].append(window[length + 1 - scored :])
        kept.append(i)
        other_ids.append(j)
    if not kept:
        raise ValueError(f"no window's recording holds {far} samples outside it (far context); use a larger near")
    out: dict = {name: torch.from_numpy(np.stack(v).astype(np.int64)) for name, v in rows.items()}
    out.update(kept=kept, other=other_ids, skipped=skipped, far=far)
    return out


@torch.no_grad()
def bits_by_far_context(model: torch.nn.Module, inputs: dict, device: str | torch.device = "cpu") -> dict:
    """Bits per sample of the scored samples of :func:`far_context_inputs` under each far context.

    Returns {"conditions": [{"far_context", "bits", "minus_none", "se"}, ...], "per_window": {condition:
    [bits of each window]}, "scored", "near", "far", "n_windows", "skipped"}; ``minus_none`` is the mean
    paired difference from the "none" condition and ``se`` its standard error over windows.
    """
    targets = inputs["targets"]
    scored = int(targets.shape[1])
    was_training = model.training
    model.eval()
    per_window: dict[str, list[float]] = {}
    try:
        for name in FAR_CONTEXTS:
            bits = []
            for i in range(len(targets)):
                logits = model(inputs[name][i : i + 1].to(device))[:, -scored:]
                nll = F.cross_entropy(logits.transpose(1, 2).double(), targets[i : i + 1].to(device), reduction="sum")
                bits.append(float(nll) / (scored * math.log(2.0)))
            per_window[name] = bits
    finally:
        model.train(was_training)
    none = np.asarray(per_window["none"])
    conditions = []
    for name in FAR_CONTEXTS:
        diff = np.asarray(per_window[name]) - none
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        conditions.append(
            {"far_context": name, "bits": float(np.mean(per_window[name])), "minus_none": float(diff.mean()), "se": se}
        )
    near = int(inputs["none"].shape[1]) - scored
    return {
        "conditions": conditions,
        "per_window": per_window,
        "scored": scored,
        "near": near,
        "far": int(inputs["far"]),
        "n_windows": len(targets),
        "skipped": int(inputs["skipped"]),
    }


def plot_positions(results: Sequence[dict], path, labels: Sequence[str]) -> str:
    """Bits per sample vs position in the window, one line per result of :func:`bits_by_position`, each
    bucket drawn at its end (log2 axis); or, for results of :func:`bits_by_context`, bits per sample of
    the scored samples vs their context (symlog axis, 0 drawn at 0). Returns the path (.png, .svg or .pdf)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    if not results or len(labels) != len(results):
        raise ValueError(f"expected one label per result and at least one result; got {len(results)} and {len(labels)}")
    kinds = {"buckets" if isinstance(r, dict) and "buckets" in r else "contexts" for r in results}
    for result, label in zip(results, labels):
        if not isinstance(result, dict) or not ("buckets" in result or "contexts" in result):
            raise ValueError(
                f"{label}: expected a result of bits_by_position or bits_by_context (with 'buckets' or 'contexts')"
            )
    if len(kinds) > 1:
        raise ValueError("expected results of one kind: all of `positions` or all of `context`")
    fig, (ax,) = new_figure(size=(6.0, 4.0))
    for result, label in zip(results, labels):
        if "buckets" in result:
            xs = [b["stop"] for b in result["buckets"]]
            ys = [b["bits"] for b in result["buckets"]]
        else:
            xs = [row["context"] for row in result["contexts"]]
            ys = [row["bits"] for row in result["contexts"]]
        ax.plot(xs, ys, marker="o", label=label)
    if kinds == {"buckets"}:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("position in the window (end of each bucket [L/2, L))")
    else:
        ax.set_xscale("symlog", base=2, linthresh=256)
        scored = results[0].get("scored", "?")
        ax.set_xlabel(f"context before the scored {scored} samples")
    ax.set_ylabel("test bits per sample")
    legend(ax)
    return save_figure(fig, path)


LAYER_NAMES = {"mamba": "Mamba", "s4d": "S4D", "transformer": "Transformer", "sashimi": "SaShiMi"}


def run_summary(run) -> dict:
    """{"run", "layer", "length", "steps", "steps_run", "val_bits", "test_bits"} of a finished ``torchssm
    train`` run of ``spoken_mulaw`` (its config.yaml and result.json's "last" record, :mod:`torchssm.runs`):
    ``steps`` is the planned schedule (epochs x batches per epoch), ``steps_run`` the optimizer steps taken."""
    config, last = read_config(run), read_result(run)["last"]
    task, model, train = config["task"], config.get("model", {}), config.get("train", {})
    if task.get("name") != "spoken_mulaw":
        raise ValueError(f"{run}: a run of task {task.get('name')!r}, expected spoken_mulaw")
    try:
        return {
            "run": str(run),
            "layer": model["layer"],
            "length": int(task["length"]),
            "steps": int(train["epochs"]) * math.ceil(int(task["n_train"]) / int(train["batch_size"])),
            "steps_run": int(last["step"]),
            "val_bits": float(last["val_loss"]) / math.log(2.0) if "val_loss" in last else float("nan"),
            "test_bits": float(last["test_loss"]) / math.log(2.0),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{run}: config.yaml / result.json lack {err} (expected a spoken_mulaw run)") from None


def plot_by_length(summaries: Sequence[dict], path) -> str:
    """Test bits per sample vs training length (log2 axis), one line per (layer, planned steps) of
    :func:`run_summary` rows, as in Gu & Dao 2023, Fig. 4. Returns the path (.png, .svg or .pdf)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    if not summaries:
        raise ValueError("expected at least one run summary")
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in summaries:
        groups.setdefault((row["layer"], row["steps"]), []).append(row)
    fig, (ax,) = new_figure(size=(7.5, 4.0))
    for (layer, steps), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["length"])
        label = f"{LAYER_NAMES.get(layer, layer)}, {steps} steps"
        ax.plot([r["length"] for r in rows], [r["test_bits"] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training length (samples per window; samples per step fixed)")
    ax.set_ylabel("test bits per sample (own test windows)")
    legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: the lines fill them
    return save_figure(fig, path)


def _lengths_main(args) -> int:
    summaries = [run_summary(run) for run in args.runs]
    for r in sorted(summaries, key=lambda r: (r["layer"], r["steps"], r["length"])):
        print(
            f"{LAYER_NAMES.get(r['layer'], r['layer']):<12} {r['steps']:>5} steps ({r['steps_run']} run)  length "
            f"{r['length']:>6}  val {r['val_bits']:.3f}  test {r['test_bits']:.3f} bits/sample  {r['run']}"
        )
    if args.figure:
        print(plot_by_length(summaries, args.figure))
    return _write_result(args, {"runs": summaries})


def _plot_main(args) -> int:
    results = []
    for name in args.results:
        try:
            with open(name, encoding="utf-8") as f:
                results.append(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {name} as JSON ({err})") from None
    labels = args.labels or [name for name in args.results]
    print(plot_positions(results, args.out, labels))
    return 0


def _load_run(args):
    """(the spoken_mulaw run ``args.run`` rebuilt by :func:`torchssm.train.reload.load_run`, its ``args.split``
    windows, the first ``args.n`` of them when given)."""
    from torchssm.train.reload import load_run

    torch.set_num_threads(args.threads)
    overrides = {} if args.split == "train" else {"n_train": 1}  # the other splits' windows do not depend on it
    if getattr(args, "length", 0):
        overrides["length"] = args.length  # another length's windows (same generator per split and length)
    if args.n_test:
        if args.split != "test":
            raise ValueError("--n-test changes the test split only; use --n for the others")
        overrides["n_test"] = args.n_test  # the run's test windows come first (same generator)
    run = load_run(args.run, task="spoken_mulaw", data_dir=args.data_dir, **overrides)
    dataset = {"train": run.task.train, "val": run.task.val, "test": run.task.test}[args.split]
    if not isinstance(dataset, TensorDictDataset):
        raise ValueError(f"the task has no {args.split!r} split")
    if args.n:
        dataset = dataset.subset(slice(0, args.n))
    return run, dataset


def default_contexts(length: int, scored: int) -> list[int]:
    """0, 256, 1024, 4096, ... (powers of 4 from 256) below ``length - scored``, and ``length - scored``."""
    longest = length - scored
    contexts = [0]
    c = 256
    while c < longest:
        contexts.append(c)
        c *= 4
    return contexts + ([longest] if longest > 0 else [])


def _positions_main(args) -> int:
    run, dataset = _load_run(args)
    model, info = run.model, run.task.info
    if args.command == "context":
        contexts = args.contexts or default_contexts(info.length, args.scored)
        result = bits_by_context(model, dataset, contexts, args.scored)
        for row in result["contexts"]:
            print(f"context {row['context']:>6} + [0, {args.scored}):  {row['bits']:.3f} bits/sample")
        for g in result["gains"]:
            print(f"gain {g['from']:>6} -> {g['to']:>6}:  {g['gain']:+.4f} +- {g['se']:.4f} bits/sample (paired)")
        print(f"({result['n_windows']} {args.split} windows of {result['length']}; the last {args.scored} scored)")
    else:
        result = bits_by_position(model, dataset, position_edges(info.length, args.first), args.batch_size)
        for b in result["buckets"]:
            print(f"[{b['start']:>6}, {b['stop']:>6})  {b['bits']:.3f} bits/sample")
        print(
            f"all positions: {result['bits']:.3f} bits/sample "
            f"({result['n_windows']} {args.split} windows of {result['length']})"
        )
    result.update(checkpoint=str(run.checkpoint), split=args.split, epoch=run.state.get("epoch"))
    return _write_result(args, result)


def _write_result(args, result: dict) -> int:
    """Write a command's result to ``args.out`` (JSON, atomically) when given; exit status 0."""
    if args.out:
        from torchssm.fileio import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


def _swap_main(args) -> int:
    run, dataset = _load_run(args)
    model, info, state = run.model, run.task.info, run.state
    options = dict(run.config.task_options)
    options.pop("data_dir", None)
    recordings = spoken_mulaw_recordings(args.split, data_dir=args.data_dir, **options)
    inputs_of_run = dataset.tensors["inputs"]
    sources = window_sources(
        recordings, info.length, len(inputs_of_run), window_rng(options.get("seed", 0), args.split, info.length)
    )
    inputs = far_context_inputs(recordings, sources, info.length, args.near, args.scored, args.seed)
    if not torch.equal(inputs["own"], inputs_of_run[inputs["kept"]]):
        raise ValueError(f"the {args.split} windows rebuilt from the recordings differ from the run's")
    result = bits_by_far_context(model, inputs)
    for row in result["conditions"]:
        print(
            f"far context {row['far_context']:<12} {row['bits']:.4f} bits/sample  "
            f"({row['minus_none']:+.4f} +- {row['se']:.4f} vs none)"
        )
    print(
        f"({result['n_windows']} {args.split} windows of {info.length}, {result['skipped']} left out; the last "
        f"{result['scored']} scored after {result['near']} samples of near context; far context {result['far']})"
    )
    result.update(checkpoint=str(run.checkpoint), split=args.split, epoch=state.get("epoch"), step=state.get("step"))
    return _write_result(args, result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchssm.audio.waveform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("positions", "bits per sample by position in the window for a spoken_mulaw run"),
        ("context", "bits per sample of each window's last samples given more or less context (paired)"),
        (
            "swap",
            "bits per sample of each window's last samples with the far context swapped (own / same / other voice)",
        ),
    ):
        p = sub.add_parser(command, help=text)
        p.add_argument("run", help="run directory of `torchssm train` (its best/ or last/ checkpoint) or a checkpoint")
        p.add_argument("--split", choices=("train", "val", "test"), default="test")
        p.add_argument("--n", type=int, default=0, help="only the first N windows (default all)")
        p.add_argument("--n-test", type=int, default=0, help="draw this many test windows instead of the run's")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--data-dir", default=None)
        p.add_argument("--out", default="", help="also write the result as JSON here")
        if command == "positions":
            p.add_argument("--first", type=int, default=FIRST_BUCKET, help="end of the first bucket (default 256)")
            p.add_argument("--batch-size", type=int, default=1)
        else:
            p.add_argument("--scored", type=int, default=1024, help="scored samples at each window's end")
        if command == "context":
            p.add_argument("--contexts", type=int, nargs="+", default=None, help="default: 0, 256, 1024, ...")
            p.add_argument(
                "--length",
                type=int,
                default=0,
                help="score the windows of this length instead of the run's (the windows of runs trained at "
                "that length), to compare models trained at different lengths on the same samples",
            )
        if command == "swap":
            p.add_argument("--near", type=int, default=1024, help="own samples before the scored ones (default 1024)")
            p.add_argument("--seed", type=int, default=0, help="seed of the far contexts' places (default 0)")
    p = sub.add_parser("lengths", help="test bits vs training length of finished runs (a table; --figure draws it)")
    p.add_argument("runs", nargs="+", help="run directories of `torchssm train` on spoken_mulaw")
    p.add_argument("--figure", default="", help="figure path (.png, .svg or .pdf): one line per layer and steps")
    p.add_argument("--out", default="", help="also write the table as JSON here")
    p = sub.add_parser("plot", help="plot the JSON files of `positions --out` or of `context --out` (one line each)")
    p.add_argument("results", nargs="+", help="JSON files written by `positions --out` or `context --out`")
    p.add_argument("--labels", nargs="+", default=None, help="one label per file (default: the file names)")
    p.add_argument("--out", required=True, help="figure path (.png, .svg or .pdf)")
    args = parser.parse_args(argv)
    try:
        if args.command == "plot":
            return _plot_main(args)
        if args.command == "lengths":
            return _lengths_main(args)
        return _swap_main(args) if args.command == "swap" else _positions_main(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
