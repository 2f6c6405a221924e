"""Accuracy under Fourier-mode input perturbations: trained classifiers on clean vs perturbed test inputs.

The PTD paper's robustness test (Yu, Nigmetov, Morozov, Mahoney, Erichson, "Robustifying State-space
Models for Long Sequences via Approximate Diagonalization", ICLR 2024, arXiv:2310.01698, Sec. 5.2 and
App. J.2): models trained on clean data are tested on inputs with added Fourier-mode noise; the abstract
states that S4-PTD / S5-PTD "show resilience to Fourier-mode noise-perturbed inputs, a crucial property not
achieved by the S4D/S5 models" (their Sec. 3.4: a diagonal initialisation's transfer function converges to
HiPPO's only weakly, so it can differ for high-frequency inputs). UNVERIFIED: the paper's exact noise
protocol (which modes, amplitudes, task) was not readable here; the protocol below is ours.

Our protocol, for a test set of real inputs x (n, L, d):

* a band is a half-open range [k0, k1) of rFFT bins 0 .. L//2 (``"high"``: the top quarter of the bins,
  ``"low"``: the lowest quarter above DC, the control);
* one direction per example: equal amplitude in every bin of the band and every channel, independent
  uniform random phases (fixed ``seed``), p = irfft(...) (n, L, d), scaled to unit RMS;
* the perturbed input is x + eps * RMS(x) * p, RMS over (L, d) per example, so the perturbation's RMS is
  exactly eps times the input's and its spectrum lies in the band only;
* the same directions are used for every eps and every model (``fourier_directions`` depends only on the
  shape, the band and the seed), so eps = 0 is the clean accuracy and models are compared on equal inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from torchssm.fileio import atomic_write
from torchssm.runs import run_label

DEFAULT_EPS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
NAMED_BANDS = ("high", "low")


def band_bins(length: int, band: str | Sequence[int]) -> tuple[int, int]:
    """The half-open rFFT bin range [k0, k1) of ``band`` for sequences of ``length`` (bins 0 .. length//2).

    ``"high"``: the top quarter of the bins; ``"low"``: as many bins just above DC (bin 0 is excluded, a
    constant offset is not a "mode"); or an explicit ``(k0, k1)``.
    """
    if length < 4:
        raise ValueError(f"Fourier bands need sequences of length >= 4; got {length}")
    n_bins = length // 2 + 1
    width = max(1, n_bins // 4)
    if isinstance(band, str):
        if band == "high":
            return n_bins - width, n_bins
        if band == "low":
            return 1, 1 + width
        raise ValueError(f"unknown band {band!r}; expected one of {list(NAMED_BANDS)} or a (k0, k1) bin range")
    k0, k1 = (int(k) for k in band)
    if not 0 <= k0 < k1 <= n_bins:
        raise ValueError(f"band bins must satisfy 0 <= k0 < k1 <= {n_bins} (length {length}); got ({k0}, {k1})")
    return k0, k1


def fourier_directions(shape: Sequence[int], bins: tuple[int, int], *, seed: int = 0) -> torch.Tensor:
    """Unit-RMS perturbations (n, L, d) made only of rFFT bins [k0, k1): equal amplitudes, random phases.

    RMS is over (L, d) per example. The DC and Nyquist bins are real in an rFFT, so their phase is a sign.
    """
    n, length, d = (int(s) for s in shape)
    k0, k1 = band_bins(length, bins)
    gen = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * torch.rand(n, k1 - k0, d, generator=gen, dtype=torch.float64)  # (n, K, d)
    coeffs = torch.zeros(n, length // 2 + 1, d, dtype=torch.complex128)  # (n, L//2+1, d)
    coeffs[:, k0:k1] = torch.polar(torch.ones_like(phase), phase)
    for real_bin in {0, length // 2} if length % 2 == 0 else {0}:
        if k0 <= real_bin < k1:
            coeffs[:, real_bin] = torch.where(phase[:, real_bin - k0] < math.pi, 1.0, -1.0).to(coeffs.dtype)
    p = torch.fft.irfft(coeffs, n=length, dim=1)  # (n, L, d)
    return p / p.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()


def perturb(x: torch.Tensor, directions: torch.Tensor, eps: float) -> torch.Tensor:
    """x + eps * RMS(x) * directions: a perturbation whose RMS is ``eps`` times each example's (n, L, d)."""
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0; got {eps}")
    rms = x.double().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()  # (n, 1, 1)
    return (x.double() + eps * rms * directions).to(x.dtype)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> float:
    """Classification accuracy of ``model`` (inputs (n, L, d) -> logits (n, C)) on targets (n,)."""
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])  # (b, C)
        correct += int((logits.argmax(-1) == targets[start : start + batch_size]).sum())
    return correct / len(inputs)


def evaluate_robustness(
    models: dict[str, nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    bands: Sequence[str | Sequence[int]] = NAMED_BANDS,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Accuracy of every model at every (band, eps) on the same perturbed inputs.

    inputs (n, L, d) real, targets (n,). Returns {"bands": {name: [k0, k1]}, "eps": [...], "models":
    {label: [{"band", "eps", "acc"}, ...]}}.
    """
    if not torch.is_floating_point(inputs) or inputs.dim() != 3:
        raise TypeError(f"robustness needs real inputs (n, L, d); got {inputs.dtype} of shape {tuple(inputs.shape)}")
    if targets.shape != inputs.shape[:1]:
        raise ValueError(
            f"targets must be (n,) class labels for inputs {tuple(inputs.shape)}; got {tuple(targets.shape)}"
        )
    eps = [float(e) for e in eps]
    for e in eps:
        if e < 0 or not math.isfinite(e):
            raise ValueError(f"eps must be finite numbers >= 0; got {e}")
    length = inputs.shape[1]
    named = {(b if isinstance(b, str) else f"bins {b[0]}-{b[1]}"): band_bins(length, b) for b in bands}
    from tqdm.auto import tqdm

    out: dict = {"bands": {k: list(v) for k, v in named.items()}, "eps": eps, "models": {k: [] for k in models}}
    for model in models.values():
        model.eval()
    for name, bins in named.items():
        directions = fourier_directions(inputs.shape, bins, seed=seed)  # (n, L, d), shared by all models
        for e in tqdm(eps, desc=f"band {name}", leave=False):
            x = perturb(inputs, directions, e)
            for label, model in models.items():
                out["models"][label].append({"band": name, "eps": e, "acc": accuracy(model, x, targets, batch_size)})
    return out


def format_table(result: dict) -> str:
    """A markdown table: one row per model and band, one column per eps (accuracy in %)."""
    eps = result["eps"]
    lines = ["| model | band (rFFT bins) | " + " | ".join(f"eps {e:g}" for e in eps) + " |"]
    lines.append("|---|---|" + "---|" * len(eps))
    for band, bins in result["bands"].items():
        for label, rows in result["models"].items():
            acc = {r["eps"]: r["acc"] for r in rows if r["band"] == band}
            cells = " | ".join(f"{100 * acc[e]:.1f}" for e in eps)
            lines.append(f"| {label} | {band} ({bins[0]}-{bins[1] - 1}) | {cells} |")
    return "\n".join(lines)


# --- command line: torchssm robustness ---------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "robustness",
        help="accuracy of trained classifiers under Fourier-mode input noise (PTD paper, Yu et al. 2024)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoints", nargs="+", metavar="RUN", help="training run directories / checkpoints")
    p.add_argument("--labels", nargs="+", help="names of the models (default: the run folders)")
    p.add_argument("--eps", nargs="+", type=float, default=list(DEFAULT_EPS), help="noise RMS / input RMS")
    p.add_argument("--bands", nargs="+", default=list(NAMED_BANDS), help="high | low | K0:K1 (rFFT bins, half-open)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random phases (same for every model)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", help="write the result to this JSON file")
    p.add_argument("--plot", help="write accuracy vs eps (one panel per band) to this .png / .svg")
    p.set_defaults(func=run)


def _parse_band(text: str) -> str | tuple[int, int]:
    if text in NAMED_BANDS:
        return text
    try:
        k0, k1 = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--bands takes high, low or K0:K1; got {text!r}") from None
    return k0, k1


def classification_test_set(checkpoint: str) -> tuple[str, dict, torch.Tensor, torch.Tensor]:
    """(checkpoint path, training record, test inputs (n, L, d), test targets (n,)) of a training run."""
    from torchssm.data.registry import build_task

    path, record = _training_record(checkpoint)
    data = build_task(record["task"], seed=record["seed"], **record["task_options"])
    if data.info.kind != "classification":
        raise ValueError(f"robustness needs a classification task; {record['task']} is {data.info.kind}")
    test = data.test
    items = [test[i] for i in range(len(test))]  # type: ignore[arg-type]
    return path, record, torch.stack([it["inputs"] for it in items]), torch.stack([it["targets"] for it in items])


def _training_record(checkpoint: str) -> tuple[str, dict]:
    from torchssm.bench.extrapolation import training_record

    path, record = training_record(checkpoint)  # a missing path raises FileNotFoundError
    if record is None:
        raise ValueError(f"{checkpoint} holds no training record (task, options): give a `torchssm train` run")
    return path, record


def run(args) -> int:
    import torchssm
    from torchssm.analysis import plots
    from torchssm.cpu_threads import set_cpu_threads

    if args.labels and len(args.labels) != len(args.checkpoints):
        raise ValueError(f"--labels needs one name per run ({len(args.checkpoints)}); got {len(args.labels)}")
    bands = [_parse_band(b) for b in args.bands]
    set_cpu_threads(args.threads)
    _, first, inputs, targets = classification_test_set(args.checkpoints[0])  # every run is tested on this set
    task_key = (first["task"], first["task_options"], first["seed"])
    models, paths = {}, {}
    for i, ckpt in enumerate(args.checkpoints):
        path, record = _training_record(ckpt)
        if (record["task"], record["task_options"], record["seed"]) != task_key:
            raise ValueError(f"{ckpt} was trained on {record}, {args.checkpoints[0]} on {first}: give runs of one task")
        label = args.labels[i] if args.labels else run_label(path)
        if label in models:
            raise ValueError(f"two runs are named {label!r}: give --labels")
        models[label], paths[label] = torchssm.from_pretrained(path), path
    print(f"[robustness] {len(models)} models on {first['task']} test ({len(inputs)} examples)", file=sys.stderr)
    result = evaluate_robustness(
        models, inputs, targets, eps=args.eps, bands=bands, seed=args.seed, batch_size=args.batch_size
    )
    result.update(task=first["task"], seed=args.seed, checkpoints=paths)
    print(format_table(result))
    if args.json:
        text = json.dumps(result, indent=1) + "\n"

        def write(tmp: str) -> None:
            Path(tmp).write_text(text)

        atomic_write(args.json, write)
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plots.plot_robustness(args.plot, result)['path']}")
    return 0
