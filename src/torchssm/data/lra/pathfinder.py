"""LRA Pathfinder / Path-X: a seeded generator of the official folder layout, and its reader.

The task (Linsley et al. 2018, "Learning long-range spatial dependencies with horizontal gated
recurrent units"; LRA version, Tay et al. 2021, Sec. 3.5): an image holds curved dashed contours
("snakes") made of short straight paddles, plus distractors, and two circular markers; are the
markers the two ends of the same contour (label 1) or ends of different contours (label 0)? The
image is read pixel by pixel: Pathfinder-32 (L = 1024), Path-X = Pathfinder-128 (L = 16384). LRA
uses the hardest difficulty, ``curv_contour_length_14`` (contours of 14 paddles).

Official layout (``lra_release/pathfinder{32,64,128,256}/curv_contour_length_14/``)::

    imgs/<k>/sample_<i>.png      grey PNGs
    metadata/<k>.npy             despite the name a TEXT file, one line per image:
                                 "imgs/<k> sample_<i>.png <i> <label> ..." (label = 4th field)

Generator (:func:`write_pathfinder`): the Pathfinder authors' ``snakes2`` algorithm with LRA's
settings for each resolution, in :mod:`torchssm.data.lra.snakes` (which cites every setting):
two target contours of 14 paddles that start 7 px apart near the centre (Pathfinder-32), 5
distractor contours of 4 paddles, smooth turns (``continuity``), antialiased grey rendering and
two disk markers - on both ends of one target (label 1) or on one end of each (label 0). Because
the targets start close together, the distance between the markers carries almost no label
information (:func:`marker_distance_check`: a logistic regression on it scores about 52%).
Labels alternate (i even -> 0), so a data set of even size is exactly balanced (snakes2 draws
each label at random). Image i is drawn from a seed derived from (seed, i): the data set is a
pure function of (seed, settings) whatever the number of worker processes. The metadata lines
follow snakes2's ``accumulate_meta``: path, file, index, label, continuity, contour length,
distractor length, paddle length, paddle thickness, paddle margin, number of paddle contrasts.

Reader: pixels normalised to [-1, 1] ((x/255 - 0.5) / 0.5, as the state-spaces/s4 Pathfinder
loader), (L, 1) float32; or raw pixel tokens 0..255 with ``tokens=True``. Split: the images are
permuted with ``seed`` and cut 80/10/10 into train/val/test (the s4 loader's val_split = test_split
= 0.1; LRA publishes no fixed split of the images).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.lra.common import (
    GENERATED_MARKER,
    LRA_CITATION,
    DataFormatError,
    data_source,
    find_dir,
    imap_ordered,
    is_generated,
    lra_download_hint,
    mark_generated,
    split_off,
)
from torchssm.data.lra.png import read_png_gray, write_png_gray
from torchssm.data.lra.snakes import SnakesSettings, draw_snakes, lra_settings, tables
from torchssm.data.registry import TaskData, TaskInfo, register_task

DIFFICULTY = "curv_contour_length_14"
PATHFINDER_CITATION = LRA_CITATION + "; Linsley et al. 2018, Pathfinder (NeurIPS)"
GENERATOR = "torchssm snakes2 v1"  # recorded in the generated folder's marker; bump when images change
logger = logging.getLogger(__name__)


def generator_options(size: int) -> SnakesSettings:
    """The generator settings LRA used at ``size`` (32, 64, 128, 256): see
    :func:`~torchssm.data.lra.snakes.lra_settings`."""
    return lra_settings(size)


def _settings(size: int, options: dict) -> SnakesSettings:
    settings = lra_settings(size)
    names = {f.name for f in dataclasses.fields(settings)} - {"size"}
    unknown = set(options) - names
    if unknown:
        raise ValueError(f"unknown Pathfinder option(s) {sorted(unknown)}; expected some of {sorted(names)}")
    return dataclasses.replace(settings, **options)


def draw_pathfinder(seed: int, index: int, opts: SnakesSettings) -> tuple[np.ndarray, int]:
    """Image ``index`` of the data set ``seed``: (size, size) uint8 and its label (index % 2)."""
    label = int(index % 2)
    return draw_snakes(opts, seed, index, label)[0], label


def draw_many(seed: int, start: int, stop: int, opts: SnakesSettings):
    """Images start..stop-1: (n, size, size) uint8, (n,) int64 labels, (n, 2, 2) marker (y, x) pairs."""
    images, markers = [], []
    for i in range(start, stop):
        img, mk, _ = draw_snakes(opts, seed, i, i % 2)
        images.append(img)
        markers.append(mk)
    return np.stack(images), np.arange(start, stop) % 2, np.stack(markers)


def _write_folder(args) -> list[str]:
    seed, k, start, stop, opts, root = args
    (root / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(start, stop):
        label = i % 2
        img, _, margin = draw_snakes(opts, seed, i, label)
        write_png_gray(root / "imgs" / str(k) / f"sample_{i}.png", img)
        lines.append(
            f"imgs/{k} sample_{i}.png {i} {label} {opts.continuity} {opts.contour_length} "
            f"{opts.distractor_length} {opts.paddle_length} {opts.paddle_thickness} {margin} 1"
        )
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return lines


def _marker(n_images: int, seed: int, settings: SnakesSettings) -> dict:
    return {
        "task": "pathfinder",
        "version": GENERATOR,
        "n_images": int(n_images),
        "seed": int(seed),
        "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
    }


def _read_marker(folder: Path) -> dict | None:
    """The settings recorded by :func:`write_pathfinder` in ``folder`` (None if there are none)."""
    try:
        marker = json.loads((folder / GENERATED_MARKER).read_text())
    except (OSError, ValueError):
        return None
    marker.pop("generator", None)  # written by mark_generated itself
    return marker


def write_pathfinder(
    out_dir,
    n_images: int,
    size: int = 32,
    seed: int = 0,
    per_folder: int = 1000,
    num_workers: int | None = None,
    progress: bool = True,
    **options,
) -> Path:
    """Write ``n_images`` into ``out_dir/pathfinder{size}/curv_contour_length_14``; returns that folder.

    ``options`` override fields of :class:`~torchssm.data.lra.snakes.SnakesSettings`. The images
    are written into a sibling folder that is renamed into place at the end, so an interrupted run
    leaves no half-written data set; an earlier generated folder there is replaced, a folder that
    was not generated (no marker) is never touched.
    """
    settings = _settings(size, options)
    if n_images < 1 or per_folder < 1:
        raise ValueError(f"n_images and per_folder must be positive; got {n_images}, {per_folder}")
    root = Path(out_dir) / f"pathfinder{size}" / DIFFICULTY
    if root.exists() and not is_generated(root):
        raise FileExistsError(f"{root} exists and was not written by torchssm's generator; not overwriting it")
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    jobs = [
        (seed, k, s, min(s + per_folder, n_images), settings, tmp) for k, s in enumerate(range(0, n_images, per_folder))
    ]
    from tqdm import tqdm

    tables(settings)  # built (and the numba code compiled) once here, not in every worker
    draw_snakes(settings, seed, 0, 0)
    try:
        with tqdm(total=n_images, desc=f"Pathfinder-{size}", unit="img", disable=not progress) as bar:
            for lines in imap_ordered(_write_folder, jobs, num_workers):
                bar.update(len(lines))
        mark_generated(tmp, **_marker(n_images, seed, settings))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _check_chunk(args):
    seed, start, stop, settings = args
    _, labels, markers = draw_many(seed, start, stop, settings)
    return np.hypot(*(markers[:, 0] - markers[:, 1]).T), labels


def marker_distance_check(
    n_train: int = 10000,
    n_test: int = 10000,
    size: int = 32,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = False,
) -> dict:
    """How well the distance between the two markers alone predicts the label.

    A scikit-learn ``LogisticRegression`` on the marker distance (and its square, so a band of
    distances could be learnt too) is fitted on images 0..n_train-1 and scored on the next
    ``n_test`` images. Chance is 0.5; the old generator of this module scored about 0.77.
    Returns {"train_accuracy", "test_accuracy", "images_per_s" (CPU time, generation only), ...}.
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise ImportError("marker_distance_check needs scikit-learn: pip install torchssm[data]") from err
    settings = lra_settings(size)
    draw_snakes(settings, seed, 0, 0)  # compile before timing
    total, chunk = n_train + n_test, 500
    jobs = [(seed, s, min(s + chunk, total), settings) for s in range(0, total, chunk)]
    from tqdm import tqdm

    t0 = time.process_time()
    dist, labels = [], []
    with tqdm(total=total, desc="marker distance check", unit="img", disable=not progress) as bar:
        for d, y in imap_ordered(_check_chunk, jobs, num_workers):
            dist.append(d)
            labels.append(y)
            bar.update(len(y))
    cpu = time.process_time() - t0
    dist, labels = np.concatenate(dist), np.concatenate(labels)
    features = np.stack([dist, dist**2], -1)  # (n, 2)
    features = (features - features[:n_train].mean(0)) / features[:n_train].std(0)
    model = LogisticRegression().fit(features[:n_train], labels[:n_train])
    return {
        "size": size,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "train_accuracy": float(model.score(features[:n_train], labels[:n_train])),
        "test_accuracy": float(model.score(features[n_train:], labels[n_train:])),
        "mean_distance_label0": float(dist[labels == 0].mean()),
        "mean_distance_label1": float(dist[labels == 1].mean()),
        "images_per_s": total / cpu if (num_workers or 1) == 1 and cpu > 0 else None,
    }


def plot_examples(path, n: int = 16, size: int = 32, seed: int = 0, columns: int = 8) -> str:
    """Save a grid of the first ``n`` generated images (titled with their labels) to ``path``."""
    from torchssm.analysis.plots import new_figure, save_figure

    images, labels, _ = draw_many(seed, 0, n, lra_settings(size))
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = new_figure(columns, rows, size=(1.6, 1.75))
    for ax in axes:
        ax.axis("off")
    for ax, img, label in zip(axes, images, labels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{'connected' if label else 'apart'} (label {label})", fontsize=8)
    fig.suptitle(f"generated Pathfinder-{size} (snakes2 algorithm, LRA settings), seed {seed}", fontsize=10)
    return save_figure(fig, path)


def read_metadata(folder: Path) -> list[tuple[str, int]]:
    """[(relative image path, label)] from ``folder/metadata/*.npy`` (text), in numeric file order."""
    files = sorted((folder / "metadata").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataFormatError(f"{folder / 'metadata'}: no metadata files (*.npy)")
    entries = []
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            f = line.split()
            if len(f) < 4 or f[3] not in ("0", "1"):
                raise DataFormatError(
                    f"{path}:{lineno}: expected 'imgs/<k> sample_<i>.png <i> <label 0|1> ...', got {line[:80]!r}"
                )
            entries.append((f"{f[0]}/{f[1]}", int(f[3])))
    return entries


class PathfinderImages(Dataset):
    """Lazily decoded images: {"inputs": (L, 1) float32 in [-1, 1] or (L,) long, "targets": () long}."""

    def __init__(self, folder: Path, entries: list[tuple[str, int]], size: int, tokens: bool = False):
        self.folder, self.entries, self.size, self.tokens = folder, entries, size, tokens

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        rel, label = self.entries[index]
        path = self.folder / rel
        try:
            img = read_png_gray(path)
        except (OSError, ValueError) as err:
            raise DataFormatError(f"{path}: cannot read image ({err})") from err
        if img.shape != (self.size, self.size):
            raise DataFormatError(f"{path}: expected a {self.size}x{self.size} image, got {img.shape}")
        x = torch.from_numpy(img.reshape(-1).astype(np.int64))  # (L,) raster order
        inputs = x if self.tokens else ((x.float() / 255.0 - 0.5) / 0.5)[:, None]  # (L, 1)
        return {"inputs": inputs, "targets": torch.tensor(label)}

    def materialize(self) -> TensorDictDataset:
        items = [self[i] for i in range(len(self))]
        return TensorDictDataset(
            inputs=torch.stack([it["inputs"] for it in items]), targets=torch.stack([it["targets"] for it in items])
        )


def _build(
    name: str,
    size: int,
    data_dir,
    seed: int,
    generate: bool,
    n_images: int,
    tokens: bool,
    materialize: bool | None,
    num_workers: int | None,
) -> TaskData:
    names = [f"pathfinder{size}/{DIFFICULTY}"]
    try:
        folder = find_dir(
            data_dir,
            names,
            ["metadata"],
            f"Pathfinder-{size} ({DIFFICULTY})",
            lra_download_hint(f"pathfinder{size}") + " Or generate images offline with generate=True.",
        )
    except FileNotFoundError:
        if not generate:
            raise
        out = resolve_data_dir(data_dir) / f"pathfinder-gen-seed{seed}"
        folder = out / f"pathfinder{size}" / DIFFICULTY
        if _read_marker(folder) != _marker(n_images, seed, lra_settings(size)):  # absent, older or other settings
            folder = write_pathfinder(out, n_images, size, seed, num_workers=num_workers)
    source = data_source(folder)
    logger.info("Pathfinder-%d: reading the %s images in %s", size, source, folder)
    entries = read_metadata(folder)
    rest, test_idx = split_off(len(entries), 0.1, seed)
    k = int(round(len(entries) * 0.1))
    val_idx, train_idx = rest[:k], rest[k:]
    parts = {
        s: PathfinderImages(folder, [entries[i] for i in idx.tolist()], size, tokens)
        for s, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
    }
    if materialize is None:
        materialize = len(entries) * size * size <= 1 << 23
    if materialize:
        parts = {s: d.materialize() if len(d) else d for s, d in parts.items()}
    info = TaskInfo(
        name=name,
        d_input=256 if tokens else 1,
        d_output=2,
        length=size * size,
        kind="classification",
        input_kind="tokens" if tokens else "real",
        citation=PATHFINDER_CITATION,
        source=source,
    )
    return TaskData(
        info=info,
        train=parts["train"],
        val=parts["val"] if len(parts["val"]) else None,
        test=parts["test"],
        extra={"folder": str(folder)},
    )


@register_task("pathfinder", "LRA Pathfinder: are two markers connected by a dashed contour; 32x32 -> L=1024")
def build_pathfinder(
    data_dir=None,
    seed: int = 0,
    resolution: int = 32,
    generate: bool = False,
    n_images: int = 2000,
    tokens: bool = False,
    materialize: bool | None = None,
    num_workers: int | None = None,
) -> TaskData:
    """Pathfinder at ``resolution`` (32, 64, 128 or 256). ``generate=True`` writes ``n_images`` images
    (into ``<data root>/pathfinder-gen-seed<seed>/``) when the official folder is missing."""
    if resolution not in (32, 64, 128, 256):
        raise ValueError(f"resolution must be 32, 64, 128 or 256; got {resolution!r}")
    return _build("pathfinder", resolution, data_dir, seed, generate, n_images, tokens, materialize, num_workers)


@register_task("pathx", "LRA Path-X: Pathfinder at 128x128 -> L=16384")
def build_pathx(
    data_dir=None,
    seed: int = 0,
    generate: bool = False,
    n_images: int = 2000,
    tokens: bool = False,
    materialize: bool | None = None,
    num_workers: int | None = None,
) -> TaskData:
    """Path-X = Pathfinder-128 (``curv_contour_length_14``)."""
    return _build("pathx", 128, data_dir, seed, generate, n_images, tokens, materialize, num_workers)
