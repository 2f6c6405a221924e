"""Autoregressive waveform modelling on synthetic speech: 8-bit mu-law samples, next-sample prediction.

The SaShiMi / Mamba audio set-up (Goel et al. 2022, Sec. 4; Gu & Dao 2023, Sec. 4.4): audio at 16 kHz
quantised to 256 mu-law levels (ITU-T G.711 companding as in WaveNet, van den Oord et al. 2016, Sec. 2.2;
:func:`torchssm.audio.dsp.mu_law_encode`), a causal sequence model predicting sample t+1 from samples
<= t, scored in bits per sample = cross-entropy / ln 2 (8 bits for a uniform guess).

Task ``spoken_mulaw``: windows of ``length`` + 1 consecutive codes cut from the clean speech of
``spoken_sentences`` (same voice split, ``voice_split``: test windows come from unseen voices); inputs
(length,) long codes, targets (length,) the next codes, kind "seq2seq" (one target per step), so
``torchssm train`` trains the deep model of ``models/backbone.py`` with per-step outputs (pooling none);
its ``loss`` / ln 2 is the bits per sample.

Recordings (``recordings``): "utterances" (the default) cuts windows from single sentences (2-5 s,
32k-80k samples, so a window of 2^16 fits in few of them); "voices" first joins, per voice, the
sentences that voice speaks in the split, in order and without a gap, into one long recording (one
speaker per recording, as a long recording of one person; the rate, pitch and intonation still change
from sentence to sentence), so that every window keeps one speaker however long it is. This joining
is this library's choice (the generator speaks single sentences), not a paper's set-up.

Bits per sample vs context length, two ways:
* :func:`bits_by_position`: the test bits per sample of one trained model by position in the window,
  in buckets [0, 2^8), [2^8, 2^9), ..., [L/2, L): the context a prediction has is its position.
  ``python -m torchssm.audio.waveform positions RUN`` prints it for a run of ``torchssm train``
  (``--out f.json``), ``... plot f.json g.json --out fig.png`` draws them (:func:`plot_positions`).
* :func:`bits_by_context` (``... context RUN``): the last samples of each test window scored with
  0, 256, 1024, ... samples of context before them: the same samples at every context length (paired).
* runs at several ``length`` with a fixed number of samples per batch (batch_size x length constant),
  as in Gu & Dao 2023, Sec. 4.4 / Fig. 4, each scored at its own length.
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
from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo, register_task

CHANNELS = 256
RECORDINGS = ("utterances", "voices")
FIRST_BUCKET = 256  # positions [0, 256) form the first bucket of bits_by_position (this library's choice)


def mulaw_windows(utterances, length: int, n: int, rng: np.random.Generator) -> TensorDictDataset:
    """``n`` windows of ``length + 1`` codes at random positions of utterances long enough to hold one."""
    usable = [u for u in utterances if len(u) > length]
    if not usable:
        raise ValueError(f"no utterance is longer than length={length} samples; use a shorter length")
    windows = np.empty((n, length + 1), dtype=np.int64)
    for i in range(n):
        u = usable[int(rng.integers(len(usable)))]
        start = int(rng.integers(len(u) - length))
        windows[i] = mu_law_encode(u[start : start + length + 1], CHANNELS)
    codes = torch.from_numpy(windows)
    return TensorDictDataset(inputs=codes[:, :-1].clone(), targets=codes[:, 1:].clone())


def voice_recordings(clips: Sequence[np.ndarray], voices: Sequence[str]) -> list[np.ndarray]:
    """One recording per voice: the clips of that voice joined in their order, without a gap.

    ``voices[i]`` is the voice of ``clips[i]``; recordings come in the order of each voice's first clip.
    """
    if len(clips) != len(voices):
        raise ValueError(f"got {len(clips)} clips but {len(voices)} voices; expected one voice per clip")
    by_voice: dict[str, list[np.ndarray]] = {}
    for clip, voice in zip(clips, voices):
        by_voice.setdefault(voice, []).append(np.asarray(clip))
    return [np.concatenate(parts) for parts in by_voice.values()]


@register_task(
    "spoken_mulaw",
    "8-bit mu-law next-sample prediction on synthetic speech (eSpeak NG, 16 kHz); loss / ln 2 = bits per sample",
)
def build_spoken_mulaw(
    data_dir=None,
    seed: int = 0,
    length: int = 4096,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 200,
    n_sentences: int = 2000,
    voice_split: str = "families",
    recordings: str = "utterances",
) -> TaskData:
    """Windows of mu-law codes (see the module docstring); the speech is ``spoken_sentences``' (cached).

    ``n_sentences`` is the training split of ``spoken_sentences`` (its validation / test splits are its
    100 / 200 sentences); with the same ``n_sentences`` and ``voice_split`` the recogniser tasks' cache
    is reused.
    """
    from torchssm.audio.synthetic import build_spoken_sentences, item_voice

    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    if recordings not in RECORDINGS:
        raise ValueError(f"recordings must be one of {list(RECORDINGS)}, got {recordings!r}")
    speech = build_spoken_sentences(
        data_dir, seed=seed, n_train=n_sentences, n_val=100, n_test=200, snr_db=None, voice_split=voice_split
    )
    splits = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        source = getattr(speech, name)
        if n:
            audio = list(source.audio)
            if recordings == "voices":
                voices = [item_voice(name, j, seed, voice_split) for j in range(len(audio))]
                audio = voice_recordings(audio, voices)
            splits[name] = mulaw_windows(audio, length, n, np.random.default_rng([seed, i, length]))
    info = TaskInfo(
        name="spoken_mulaw",
        d_input=CHANNELS,
        d_output=CHANNELS,
        length=length,
        kind="seq2seq",
        input_kind="tokens",
        citation="mu-law speech modelling as in SaShiMi (Goel et al. 2022) on eSpeak NG synthetic speech",
    )
    return TaskData(info=info, train=splits["train"], val=splits.get("val"), test=splits["test"])


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
    [{"context", "bits"}, ...], "scored", "n_windows", "length"}.
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
    rows = []
    try:
        for c in contexts:
            total = 0.0
            for i in range(len(inputs)):
                x = inputs[i : i + 1, length - scored - c :].to(device)
                logits = model(x)[:, -scored:]
                y = targets[i : i + 1, -scored:].to(device)
                total += float(F.cross_entropy(logits.transpose(1, 2).double(), y, reduction="sum"))
            rows.append({"context": c, "bits": total / (len(inputs) * scored * math.log(2.0))})
    finally:
        model.train(was_training)
    return {"contexts": rows, "scored": scored, "n_windows": len(inputs), "length": length}


def plot_positions(results: Sequence[dict], path, labels: Sequence[str]) -> str:
    """Bits per sample vs position in the window, one line per result of :func:`bits_by_position`, each
    bucket drawn at its end (log2 axis). Returns the path (.png, .svg or .pdf)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    if not results or len(labels) != len(results):
        raise ValueError(f"expected one label per result and at least one result; got {len(results)} and {len(labels)}")
    fig, (ax,) = new_figure(size=(6.0, 4.0))
    for result, label in zip(results, labels):
        if not isinstance(result, dict) or "buckets" not in result:
            raise ValueError(f"{label}: expected a result of bits_by_position (a dict with 'buckets')")
        stops = [b["stop"] for b in result["buckets"]]
        ax.plot(stops, [b["bits"] for b in result["buckets"]], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position in the window (end of each bucket [L/2, L))")
    ax.set_ylabel("test bits per sample")
    legend(ax)
    return save_figure(fig, path)


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
    """(model, dataset, info, checkpoint path, sidecar) of the spoken_mulaw run ``args.run``."""
    from torchssm.data.registry import build_task
    from torchssm.models import build_model
    from torchssm.runs import find_checkpoint
    from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state
    from torchssm.train.config import ExperimentConfig, model_config_for_task, saved_config

    torch.set_num_threads(args.threads)
    path = find_checkpoint(args.run)
    state = read_checkpoint_state(path)
    cfg = ExperimentConfig.from_dict(saved_config(state["config"]))
    if cfg.task_name != "spoken_mulaw":
        raise ValueError(f"{path} was trained on task {cfg.task_name!r}; expected 'spoken_mulaw'")
    options = dict(cfg.task_options)
    if args.n_test:
        if args.split != "test":
            raise ValueError("--n-test changes the test split only; use --n for the others")
        options["n_test"] = args.n_test  # the run's test windows come first (same generator)
    task = build_task(cfg.task_name, data_dir=args.data_dir, **options)
    dataset = {"train": task.train, "val": task.val, "test": task.test}[args.split]
    if not isinstance(dataset, TensorDictDataset):
        raise ValueError(f"the task has no {args.split!r} split")
    if args.n:
        dataset = dataset.subset(slice(0, args.n))
    model = build_model(model_config_for_task(cfg.model, task.info))
    load_checkpoint(path, model)
    return model, dataset, task.info, path, state


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
    model, dataset, info, path, state = _load_run(args)
    if args.command == "context":
        contexts = args.contexts or default_contexts(info.length, args.scored)
        result = bits_by_context(model, dataset, contexts, args.scored)
        for row in result["contexts"]:
            print(f"context {row['context']:>6} + [0, {args.scored}):  {row['bits']:.3f} bits/sample")
        print(f"({result['n_windows']} {args.split} windows of {result['length']}; the last {args.scored} scored)")
    else:
        result = bits_by_position(model, dataset, position_edges(info.length, args.first), args.batch_size)
        for b in result["buckets"]:
            print(f"[{b['start']:>6}, {b['stop']:>6})  {b['bits']:.3f} bits/sample")
        print(
            f"all positions: {result['bits']:.3f} bits/sample "
            f"({result['n_windows']} {args.split} windows of {result['length']})"
        )
    result.update(checkpoint=str(path), split=args.split, epoch=state.get("epoch"))
    if args.out:
        from torchssm.fileio import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchssm.audio.waveform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("positions", "bits per sample by position in the window for a spoken_mulaw run"),
        ("context", "bits per sample of each window's last samples given more or less context (paired)"),
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
            p.add_argument("--contexts", type=int, nargs="+", default=None, help="default: 0, 256, 1024, ...")
    p = sub.add_parser("plot", help="plot the JSON files of `positions --out` (one line each)")
    p.add_argument("results", nargs="+", help="JSON files written by `positions --out`")
    p.add_argument("--labels", nargs="+", default=None, help="one label per file (default: the file names)")
    p.add_argument("--out", required=True, help="figure path (.png, .svg or .pdf)")
    args = parser.parse_args(argv)
    try:
        return _plot_main(args) if args.command == "plot" else _positions_main(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
