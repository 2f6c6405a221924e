"""Figures of the LRU article and of trained models (matplotlib, imported lazily, no display needed).

Each ``plot_*`` function computes its numbers with the pure functions of
:mod:`torchssm.analysis.dynamics`, :mod:`~torchssm.analysis.eigen` and :mod:`~torchssm.analysis.impulse`,
writes one figure (format from the suffix: .png or .svg) and returns ``{"path": ..., **numbers}``.
Figures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no GUI backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from torchssm.analysis import curves, dynamics, eigen, impulse
from torchssm.fileio import atomic_write

LEGEND_FONTSIZE = 8  # the smallest size that stays legible at dpi 120 (figures are viewed at ~100%)


def new_figure(ncols: int = 1, nrows: int = 1, size=(5.0, 4.0)):
    """A bare Figure on an Agg canvas (no pyplot, no GUI) and its flat array of nrows * ncols axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'torchssm[plot]'") from err
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, axes


def save_figure(fig, path) -> str:
    """Write ``fig`` to ``path`` (.png, .svg or .pdf, parent directories created) atomically (a temporary
    file renamed over it, :func:`torchssm.fileio.atomic_write`: a failed save leaves no half-written image);
    returns the path."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in {".png", ".svg", ".pdf"}:
        raise ValueError(f"figure path must end in .png, .svg or .pdf; got {path!r}")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=suffix[1:]))
    return path


def legend(ax, **kwargs):
    """A legend readable at the figure's size (a half-opaque frame over the data); ``kwargs`` as ax.legend."""
    kwargs.setdefault("fontsize", LEGEND_FONTSIZE)
    kwargs.setdefault("framealpha", 0.85)
    return ax.legend(**kwargs)


def _np(*tensors):
    """Tensors -> numpy arrays for matplotlib (which warns on torch's __array__)."""
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t for t in tensors]


def _unit_circle(ax, shade: bool = True):
    t = torch.linspace(0, 2 * math.pi, 400)
    ax.plot(*_np(t.cos(), t.sin()), color="k", lw=0.8)
    if shade:
        ax.fill(*_np(t.cos(), t.sin()), color="tab:green", alpha=0.08, label="stable |z| < 1")
    ax.set_aspect("equal")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")


def plot_spring_mass_damper(
    path,
    m: float = 1.0,
    k: float = 1.0,
    dt: float = 0.5,
    dampings: Sequence[float] = (-0.4, -0.1, 0.1, 0.4, 1.0, 2.0, 3.0),
) -> dict:
    """Four panels: continuous eigenvalues vs damping c (stable / unstable half-planes), free response
    vs damping ratio, and ZOH vs bilinear discrete eigenvalues in the unit disk."""
    fig, (ax_s, ax_r, ax_z, ax_zz) = new_figure(2, 2)
    sweep = torch.linspace(min(dampings), max(dampings), 200).tolist()
    locus = dynamics.eigenvalue_locus(sweep, m, k)  # (200, 2)
    ax_s.axvspan(-4, 0, color="tab:green", alpha=0.08, label="stable Re < 0")
    ax_s.axvspan(0, 4, color="tab:red", alpha=0.08, label="unstable Re > 0")
    ax_s.plot(*_np(locus.real.ravel(), locus.imag.ravel()), ".", ms=1.5, color="0.5")
    eigs = {c: dynamics.smd_eigenvalues(m, k, c) for c in dampings}
    for c, lam in eigs.items():
        ax_s.plot(*_np(lam.real, lam.imag), "x", label=f"c={c:g} (zeta={dynamics.damping_ratio(m, k, c):.2f})")
    ax_s.set_xlim(-3.5, 1.0)
    ax_s.set_ylim(-1.15, 2.0)  # room above the eigenvalues for the legend
    ax_s.set_title(f"continuous eigenvalues, m={m:g}, k={k:g}")
    ax_s.set_xlabel("Re lambda = -c / 2m")
    ax_s.set_ylabel("Im lambda")
    legend(ax_s, loc="upper left", ncols=2)

    zetas = (-0.05, 0.1, 0.5, 1.0, 2.0)
    t, responses = dynamics.damping_responses(zetas, omega_n=math.sqrt(k / m))
    for zeta, x in responses.items():
        ax_r.plot(*_np(t, x), label=f"zeta={zeta:g}")
    ax_r.set_title("free response x(t), x(0)=1")
    ax_r.set_xlabel("t")
    ax_r.set_ylabel("position x(t)")
    legend(ax_r, loc="upper left", title="damping ratio")

    discrete = {}
    for ax, method in ((ax_z, "zoh"), (ax_zz, "bilinear")):
        _unit_circle(ax)
        for c, lam in eigs.items():
            z = dynamics.discrete_eigenvalues(lam, dt, method)
            discrete[(method, c)] = z
            ax.plot(*_np(z.real, z.imag), "x", label=f"c={c:g}")
        ax.set_title(f"{method} eigenvalues, dt={dt:g}")
        legend(ax, loc="lower left", ncols=2)
    out = {"path": save_figure(fig, path), "continuous": eigs, "discrete": discrete, "responses": responses}
    return out


def plot_information_propagation(path, **kwargs) -> dict:
    """The aa-vs-ab demo (the article's Figures 3-5): inputs and responses for each damping regime."""
    demo = dynamics.information_propagation(**kwargs)
    labels = list(demo["response"])
    fig, axes = new_figure(1, len(labels) + 1, size=(9.0, 2.2))
    t = demo["t"]
    for seq, u in demo["inputs"].items():
        axes[0].plot(*_np(t[:-1], u), label=seq)
    axes[0].set_title("inputs: token a = +1, b = -1")
    axes[0].set_ylabel("input u(t)")
    legend(axes[0], loc="upper right", title="sequence")
    for ax, label in zip(axes[1:], labels):
        for seq, x in demo["response"][label].items():
            ax.plot(*_np(t, x), label=seq)
        nu = demo["damping"][label]
        ax.set_title(f"{label} (nu={nu:g}): |s_aa - s_ab| at end = {demo['separation'][label]:.3g}")
        ax.set_ylabel("position x(t)")  # colours as in the inputs' legend
    axes[-1].set_xlabel("t")
    demo["path"] = save_figure(fig, path)
    return demo


def plot_lru_ring(
    path, n: int = 512, r_min: float = 0.4, r_max: float = 0.9, max_phase: float = 2 * math.pi, seed: int = 0
) -> dict:
    """Eigenvalues of the LRU ring init in the complex plane, with the ring r_min <= |lambda| <= r_max."""
    lam = eigen.ring_init_eigenvalues(n, r_min, r_max, max_phase, seed)
    fig, (ax,) = new_figure()
    _unit_circle(ax, shade=False)
    t = torch.linspace(0, max_phase, 200)
    for i, r in enumerate((r_min, r_max)):
        ax.plot(
            *_np(r * t.cos(), r * t.sin()),
            "--",
            color="tab:red",
            lw=0.8,
            label="|lambda| = r_min, r_max" if i == 0 else None,
        )
    ax.plot(*_np(lam.real, lam.imag), ".", ms=3, label=f"{lam.numel()} eigenvalues (seed {seed})")
    legend(ax, loc="upper left", bbox_to_anchor=(0.0, -0.12))
    ax.set_title(f"LRU ring init: r in [{r_min:g}, {r_max:g}], phase in [0, {max_phase:.3g}]")
    return {"path": save_figure(fig, path), "eigenvalues": lam, **eigen.eigenvalue_summary(lam)}


def plot_checkpoint_eigenvalues(path, checkpoint, init=None) -> dict:
    """Eigenvalues of every LRU layer in a checkpoint over those before training.

    ``init`` says what "before" is: ``"run"`` (the run's own initial eigenvalues, rebuilt from its
    config and ``train.seed``: :func:`eigen.initial_eigenvalues`; ``checkpoint`` must be a training
    run), another checkpoint (a path), ring-init keyword arguments ``{"r_min", "r_max", "max_phase",
    "seed"}`` (a fresh draw of the ring, not this run's), or None (trained eigenvalues only).
    """
    trained = eigen.checkpoint_eigenvalues(checkpoint)
    state, ckpt = eigen.training_state(checkpoint), eigen.training_checkpoint(checkpoint)
    trained_label = "trained"  # a training run's checkpoint: say which one and its epoch
    if state is not None and ckpt is not None:
        trained_label = f"trained ({os.path.basename(ckpt)}, epoch {state.get('epoch', '?')})"
    before, label = None, None
    if isinstance(init, str) and init == "run":
        before, seed = eigen.initial_eigenvalues(checkpoint)
        label = f"initial (train.seed {seed})"
    elif isinstance(init, dict) and set(init) <= {"r_min", "r_max", "max_phase", "seed"}:
        before = {name: eigen.ring_init_eigenvalues(lam.numel(), **init) for name, lam in trained.items()}
        label = "a fresh ring-init draw"
    elif init is not None:
        before, label = eigen.checkpoint_eigenvalues(init), "init checkpoint"
    fig, axes = new_figure(len(trained), 1, size=(4.5, 4.8))
    for ax, (name, lam) in zip(axes, trained.items()):
        _unit_circle(ax, shade=False)
        if before is not None:
            ref = before.get(name, next(iter(before.values())))  # an init checkpoint with other layer names
            ax.plot(*_np(ref.real, ref.imag), "o", ms=3.5, mfc="none", color="0.55", label=label)
        ax.plot(*_np(lam.real, lam.imag), ".", ms=4, color="tab:blue", label=trained_label)
        ax.set_title(name)
        legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2)
    summary = {name: eigen.eigenvalue_summary(lam) for name, lam in trained.items()}
    before_summary = {name: eigen.eigenvalue_summary(lam) for name, lam in (before or {}).items()}
    return {
        "path": save_figure(fig, path),
        "eigenvalues": trained,
        "before": before,
        "before_label": label,
        "label": trained_label,
        "summary": summary,
        "before_summary": before_summary,
    }


def plot_training_curves(path, runs: Sequence, x: str = "epoch", labels: Sequence[str] | None = None) -> dict:
    """Loss and (for classification) accuracy against ``x`` ("epoch" or "step") of one or more training
    runs read from their ``metrics.jsonl``: one colour per run, one line style per split (train solid,
    val dashed, test dotted). Returns the curves drawn: ``{"curves": {label: {metric: (xs, ys)}}}``."""
    runs = list(runs)
    if not runs:
        raise ValueError("plot curves needs at least one run directory (or metrics.jsonl)")
    labels = list(labels) if labels else curves.run_labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs")
    records = [curves.read_metrics(run) for run in runs]
    kinds = [k for k in ("loss", "acc") if any(curves.has_metric(r, k) for r in records)]
    if not kinds:
        raise ValueError(f"no *_loss or *_acc entries in {runs[0]}'s metrics: not a `torchssm train` run?")
    fig, axes = new_figure(len(kinds), 1, size=(5.5, 4.0))
    styles = {"train": "-", "val": "--", "test": ":"}
    drawn: dict = {}
    for i, (label, recs) in enumerate(zip(labels, records)):
        color = f"C{i % 10}"
        for ax, kind in zip(axes, kinds):
            for split, style in styles.items():
                xs, ys = curves.series(recs, f"{split}_{kind}", x)
                if not xs:
                    continue
                scale = 100.0 if kind == "acc" else 1.0
                ax.plot(
                    xs, [scale * v for v in ys], style, color=color, lw=1.5, marker="o" if len(xs) < 12 else None, ms=3
                )
                drawn.setdefault(label, {})[f"{split}_{kind}"] = (xs, ys)
    names = {"loss": "loss", "acc": "accuracy (%)"}
    for ax, kind in zip(axes, kinds):
        ax.set_xlabel(x)
        ax.set_ylabel(names[kind])
        ax.set_title(f"{names[kind].split(' ')[0]} per {x}")
        ax.grid(alpha=0.3)
    # two legends: the runs (colour) on the first panel, the splits (line style) on the last
    handles = [axes[0].plot([], [], "-", color=f"C{i % 10}", lw=2)[0] for i in range(len(labels))]
    legend(axes[0], handles=handles, labels=labels, loc="upper right", title="run")
    split_handles = [axes[-1].plot([], [], style, color="0.2")[0] for style in styles.values()]
    legend(
        axes[-1],
        handles=split_handles,
        labels=list(styles),
        loc="lower right" if "acc" in kinds else "upper right",
        title="split",
    )
    return {"path": save_figure(fig, path), "curves": drawn, "labels": labels}


def plot_length_generalisation(path, records: Sequence[dict], train_length: int | None = None) -> dict:
    """Test accuracy against test length (log2 axis), one line per model, as the Mamba paper's
    induction-heads extrapolation figure (Gu & Dao 2023, Table 2 / Fig. 4 left). ``records`` are the
    JSON of ``torchssm length-eval`` ({"label", "rows": [{"length", "acc", "status"}, ...]}); lengths not
    evaluated (skipped) are left out of the line. ``train_length`` draws a dashed vertical line."""
    records = list(records)
    if not records:
        raise ValueError("plot length needs at least one `torchssm length-eval --json` file")
    fig, (ax,) = new_figure(size=(6.0, 4.0))
    drawn = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "rows" not in rec:
            raise ValueError("each length record must be a dict with 'rows' (from `torchssm length-eval --json`)")
        pts = [(r["length"], 100.0 * r["acc"]) for r in rec["rows"] if r.get("acc") is not None]
        label = str(rec.get("label", f"model {i}"))
        drawn[label] = pts
        if pts:
            ax.plot(*zip(*pts), "-o", color=f"C{i % 10}", lw=1.5, ms=4, label=label)
    if train_length:
        ax.axvline(train_length, ls="--", color="0.4", lw=1, label=f"train length {train_length}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("test sequence length")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs test length")
    ax.grid(alpha=0.3)
    legend(ax, loc="upper right")  # accuracy falls with length: the upper right is usually free
    return {"path": save_figure(fig, path), "curves": drawn}


def plot_robustness(path, result: dict) -> dict:
    """Accuracy against the Fourier-noise level eps, one panel per frequency band and one line per model:
    the PTD paper's robustness comparison (Yu et al. 2024, Sec. 5.2). ``result`` is the JSON of
    ``torchssm robustness`` ({"bands": {name: [k0, k1]}, "models": {label: [{"band", "eps", "acc"}]}})."""
    if not isinstance(result, dict) or not result.get("models") or not result.get("bands"):
        raise ValueError("plot_robustness needs the result of `torchssm robustness` (with 'bands' and 'models')")
    bands = list(result["bands"])
    fig, axes = new_figure(ncols=len(bands), size=(4.5, 3.8))
    drawn: dict = {}
    for ax, band in zip(axes, bands):
        k0, k1 = result["bands"][band]
        for i, (label, rows) in enumerate(result["models"].items()):
            pts = sorted((r["eps"], 100.0 * r["acc"]) for r in rows if r["band"] == band)
            drawn[(band, label)] = pts
            ax.plot(*zip(*pts), "-o", color=f"C{i % 10}", lw=1.5, ms=4, label=label)
        ax.set_xlabel("noise RMS / input RMS (eps)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{band} band: rFFT bins {k0}-{k1 - 1}")
        ax.grid(alpha=0.3)
        legend(ax, loc="lower left")  # accuracy falls with eps: the lower left is usually free
    return {"path": save_figure(fig, path), "curves": drawn}


def plot_perplexity_by_position(path, records: Sequence[dict], bucket: int = 64) -> dict:
    """Perplexity against token position (mean over buckets of ``bucket`` positions), one line per model, the
    training context marked: the length-extrapolation reading of Press et al. 2022 (Sec. 2). ``records`` are
    ``lm_eval.json`` files of ``torchssm lm eval`` ({"label", "train_context", "loss_by_position": nats per
    position}); returns the bucket centres and perplexities drawn per label."""
    records = list(records)
    if not records:
        raise ValueError("plot perplexity by position needs at least one lm_eval.json (torchssm lm eval)")
    if bucket < 1:
        raise ValueError(f"bucket must be >= 1 position; got {bucket}")
    fig, (ax,) = new_figure(size=(6.0, 4.0))
    drawn = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "loss_by_position" not in rec:
            raise ValueError("each record must be an lm_eval.json dict with 'loss_by_position' (torchssm lm eval)")
        loss = torch.tensor(rec["loss_by_position"], dtype=torch.float64)
        centres, ppl = [], []
        for lo in range(0, loss.shape[0], bucket):
            chunk = loss[lo : lo + bucket]
            centres.append(lo + (chunk.shape[0] - 1) / 2)
            ppl.append(math.exp(float(chunk.mean())))
        label = str(rec.get("label", f"model {i}"))
        drawn[label] = list(zip(centres, ppl))
        ax.plot(centres, ppl, "-", color=f"C{i % 10}", lw=1.5, label=label)
    train_context = records[0].get("train_context")
    if train_context:
        ax.axvline(train_context, ls="--", color="0.4", lw=1, label=f"training context {train_context}")
    ax.set_yscale("log")
    ax.set_xlabel(f"token position (mean over {bucket} positions)")
    ax.set_ylabel("perplexity")
    ax.set_title("perplexity by position")
    ax.grid(alpha=0.3, which="both")
    legend(ax, loc="upper right")
    return {"path": save_figure(fig, path), "curves": drawn}


def plot_impulse_responses(path, model: torch.nn.Module, length: int = 256, channels: int = 4) -> dict:
    """For every SSM layer in ``model``: K[t, i, i] of the first ``channels`` channels and ||K[t]||_F."""
    layers = list(impulse.sequence_layers(model))
    if not layers:
        raise ValueError(f"{type(model).__name__} contains no SSM layer (torchssm.layers.base.SSMLayer)")
    fig, axes = new_figure(2, len(layers), size=(5.0, 3.0))
    kernels = {}
    for row, (name, layer) in enumerate(layers):
        k = impulse.impulse_response(layer, length)  # (l, h, h)
        kernels[name] = k
        ax_k, ax_n = axes[2 * row], axes[2 * row + 1]
        for i in range(min(channels, k.shape[1])):
            ax_k.plot(*_np(k[:, i, i].double()), lw=0.8, label=f"channel {i}")
        ax_k.set_title(f"{name}: impulse response K[t, i, i]")
        ax_k.set_xlabel("t")
        ax_k.set_ylabel("K[t, i, i] (output i, input i)")
        legend(ax_k, loc="upper right")
        ax_n.semilogy(*_np(impulse.kernel_norms(k).clamp_min(1e-30)))
        ax_n.set_title(f"{name}: ||K[t]||_F")
        ax_n.set_xlabel("t")
        ax_n.set_ylabel("||K[t]||_F (log scale)")
    return {"path": save_figure(fig, path), "kernels": kernels}


def plot_hippo(path, n: int = 64) -> dict:
    """HiPPO matrices (LegS, LegT, FouT, whichever torchssm.layers.init provides) as heat maps.

    Returns {"path": None, "skipped": reason} without writing a file when none is available.
    """
    mats = impulse.hippo_matrices(n)
    if not mats:
        return {"path": None, "skipped": "torchssm.layers.init provides no HiPPO matrices (hippo_legs, ...) yet"}
    fig, axes = new_figure(len(mats), 1, size=(4.0, 3.6))
    for ax, (kind, a) in zip(axes, mats.items()):
        im = ax.imshow(*_np(a), cmap="RdBu_r", vmin=-float(a.abs().max()), vmax=float(a.abs().max()))
        ax.set_title(f"HiPPO-{kind} A ({n}x{n})")
        ax.set_xlabel("column k")
        ax.set_ylabel("row n")
        fig.colorbar(im, ax=ax, shrink=0.8, label="A[n, k]")
    return {"path": save_figure(fig, path), "matrices": mats}
