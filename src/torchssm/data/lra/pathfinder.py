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

Generator (:func:`write_pathfinder`, a re-implementation, not the original snakes2 code): each
contour is a chain of ``n_paddles`` straight paddles of ``paddle_length`` px separated by gaps of
``gap`` px, the heading turning by at most ``max_turn`` between paddles (smooth curvature); two
contours A and B of 14 paddles and ``n_distractors`` shorter contours are placed so that no two
come closer than ``min_separation`` px, and every image carries markers at both ends of A
(label 1) or at one end of A and one end of B (label 0), so positives and negatives differ only in
the marker placement. Labels alternate (i even -> 0), so a data set of even size is exactly
balanced. Image i is drawn from ``numpy.random.default_rng([seed, i])``: the data set is a pure
function of (seed, options) whatever the number of worker processes.

Reader: pixels normalised to [-1, 1] ((x/255 - 0.5) / 0.5, as the state-spaces/s4 Pathfinder
loader), (L, 1) float32; or raw pixel tokens 0..255 with ``tokens=True``. Split: the images are
permuted with ``seed`` and cut 80/10/10 into train/val/test (the s4 loader's val_split = test_split
= 0.1; LRA publishes no fixed split of the images).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.lra.common import (LRA_CITATION, DataFormatError, find_dir, imap_ordered, lra_download_hint,
                                      split_off)
from torchssm.data.lra.png import read_png_gray, write_png_gray
from torchssm.data.registry import TaskData, TaskInfo, register_task

DIFFICULTY = "curv_contour_length_14"
PATHFINDER_CITATION = LRA_CITATION + "; Linsley et al. 2018, Pathfinder (NeurIPS)"


def generator_options(size: int) -> dict:
    """Default generator geometry for a ``size`` x ``size`` image (scaled from 32 px)."""
    s = size / 32.0
    return {"size": size, "n_paddles": 14, "paddle_length": 2.0 * s, "gap": 1.5 * s, "max_turn": math.pi / 5,
            "n_distractors": 2, "distractor_paddles": 5, "min_separation": 2.0 * s,
            "marker_radius": 1.5 * s}


def _min_dist2(pix: np.ndarray, points: np.ndarray) -> float:
    """Smallest squared distance between two point sets (k, 2) and (m, 2); inf if one is empty."""
    if len(points) == 0 or len(pix) == 0:
        return math.inf
    return float(((pix[:, None, :] - points[None, :, :]) ** 2).sum(-1).min())


def _contour(rng, opts: dict, n_paddles: int, others: np.ndarray, tries: int = 200, shift_tries: int = 10):
    """A contour keeping ``min_separation`` from the points ``others`` (m, 2) and from itself.

    The shape comes first: paddle k has heading h_k = h_{k-1} + U(-max_turn, max_turn), length
    ``paddle_length``, and is followed by a gap. A shape that comes back near its own past is
    redrawn; one that fits is rotated uniformly and translated uniformly inside the image, and
    redrawn if it touches another contour. Returns (pixels (k, 2), start (2,), end (2,)) or None.
    """
    size, plen, gap, sep2 = opts["size"], opts["paddle_length"], opts["gap"], opts["min_separation"] ** 2
    lo, hi = opts["marker_radius"], size - 1.0 - opts["marker_radius"]
    t = np.linspace(0.0, 1.0, int(math.ceil(2 * plen)) + 1)  # (m,) samples along a paddle
    k = np.arange(n_paddles)
    far = np.abs(k[:, None] - k[None, :]) >= 2  # (n, n) pairs of paddles that must stay apart
    for _ in range(tries):
        turns = rng.uniform(-opts["max_turn"], opts["max_turn"], n_paddles)
        turns[0] = rng.uniform(0, 2 * math.pi)  # the global rotation
        heading = np.cumsum(turns)  # (n,)
        d = np.stack([np.sin(heading), np.cos(heading)], -1)  # (n, 2) unit directions
        starts = np.concatenate([np.zeros((1, 2)), np.cumsum((plen + gap) * d, 0)[:-1]])  # (n, 2)
        ends = starts + plen * d  # (n, 2)
        pts = np.concatenate([starts, ends])
        lo_pt, hi_pt = pts.min(0), pts.max(0)
        if ((hi_pt - lo_pt) > (hi - lo)).any():
            continue  # does not fit in the image
        rel = starts[:, None] + t[None, :, None] * (ends - starts)[:, None]  # (n, m, 2) points along paddles
        dist2 = ((rel[:, None, :, None] - rel[None, :, None, :]) ** 2).sum(-1)  # (n, n, m, m)
        if (dist2.min((2, 3)) <= sep2 + 1.0)[far].any():  # (+1: margin for the rounding to pixels)
            continue  # comes back onto itself
        for _shift in range(shift_tries):  # a few positions of this shape before drawing a new one
            shift = rng.uniform(lo - lo_pt, hi - hi_pt)  # (2,)
            pix = np.rint(rel + shift).reshape(-1, 2).astype(np.int64)  # (n*m, 2) pixels
            if _min_dist2(pix, others) > sep2:
                return pix, starts[0] + shift, ends[-1] + shift
    return None


def _disk(canvas: np.ndarray, center: np.ndarray, radius: float) -> None:
    yy, xx = np.mgrid[: canvas.shape[0], : canvas.shape[1]]
    canvas[(yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius * radius + 1e-9] = 255


def draw_pathfinder(seed: int, index: int, opts: dict) -> Tuple[np.ndarray, int]:
    """Image ``index`` (size, size) uint8 and its label (index % 2)."""
    rng = np.random.default_rng([int(seed), int(index)])
    size, label = opts["size"], int(index % 2)
    for _ in range(1000):
        occupied = np.zeros((0, 2), dtype=np.int64)  # pixels of the contours placed so far
        paths = []
        for n in [opts["n_paddles"], opts["n_paddles"]] + [opts["distractor_paddles"]] * opts["n_distractors"]:
            c = _contour(rng, opts, n, occupied, tries=200 if len(paths) < 2 else 30)
            if c is None:
                break
            paths.append(c)
            occupied = np.concatenate([occupied, c[0]])
        if len(paths) < 2:
            continue  # the two main contours must exist; a distractor that does not fit is left out
        canvas = np.zeros((size, size), dtype=np.uint8)
        for pix, _, _ in paths:
            canvas[pix[:, 0], pix[:, 1]] = 255
        (_, a0, a1), (_, _, b1) = paths[0], paths[1]
        _disk(canvas, a0, opts["marker_radius"])
        _disk(canvas, a1 if label == 1 else b1, opts["marker_radius"])
        return canvas, label
    raise RuntimeError(f"could not place two contours in a {size}x{size} image; check the generator options")


def _write_folder(args) -> List[str]:
    seed, k, start, stop, opts, root = args
    (root / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(start, stop):
        img, label = draw_pathfinder(seed, i, opts)
        write_png_gray(root / "imgs" / str(k) / f"sample_{i}.png", img)
        lines.append(f"imgs/{k} sample_{i}.png {i} {label} {opts['n_paddles']} {opts['n_distractors']}")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return lines


def write_pathfinder(out_dir, n_images: int, size: int = 32, seed: int = 0, per_folder: int = 1000,
                     num_workers: Optional[int] = None, progress: bool = True, **options) -> Path:
    """Write ``n_images`` into ``out_dir/pathfinder{size}/curv_contour_length_14``; returns that folder."""
    opts = generator_options(size)
    unknown = set(options) - set(opts)
    if unknown:
        raise ValueError(f"unknown Pathfinder option(s) {sorted(unknown)}; expected some of {sorted(opts)}")
    opts.update(options)
    if n_images < 1 or per_folder < 1:
        raise ValueError(f"n_images and per_folder must be positive; got {n_images}, {per_folder}")
    root = Path(out_dir) / f"pathfinder{size}" / DIFFICULTY
    jobs = [(seed, k, s, min(s + per_folder, n_images), opts, root)
            for k, s in enumerate(range(0, n_images, per_folder))]
    from tqdm import tqdm

    with tqdm(total=n_images, desc=f"Pathfinder-{size}", unit="img", disable=not progress) as bar:
        for lines in imap_ordered(_write_folder, jobs, num_workers):
            bar.update(len(lines))
    return root


def read_metadata(folder: Path) -> List[Tuple[str, int]]:
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
                raise DataFormatError(f"{path}:{lineno}: expected 'imgs/<k> sample_<i>.png <i> <label 0|1> ...', "
                                      f"got {line[:80]!r}")
            entries.append((f"{f[0]}/{f[1]}", int(f[3])))
    return entries


class PathfinderImages(Dataset):
    """Lazily decoded images: {"inputs": (L, 1) float32 in [-1, 1] or (L,) long, "targets": () long}."""

    def __init__(self, folder: Path, entries: List[Tuple[str, int]], size: int, tokens: bool = False):
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
        return TensorDictDataset(inputs=torch.stack([it["inputs"] for it in items]),
                                 targets=torch.stack([it["targets"] for it in items]))


def _build(name: str, size: int, data_dir, seed: int, generate: bool, n_images: int, tokens: bool,
           materialize: Optional[bool], num_workers: Optional[int]) -> TaskData:
    names = [f"pathfinder{size}/{DIFFICULTY}"]
    try:
        folder = find_dir(data_dir, names, ["metadata"], f"Pathfinder-{size} ({DIFFICULTY})",
                          lra_download_hint(f"pathfinder{size}") + " Or generate images offline with generate=True.")
    except FileNotFoundError:
        if not generate:
            raise
        folder = write_pathfinder(resolve_data_dir(data_dir) / f"pathfinder-gen-seed{seed}", n_images, size, seed,
                                  num_workers=num_workers)
    entries = read_metadata(folder)
    rest, test_idx = split_off(len(entries), 0.1, seed)
    k = int(round(len(entries) * 0.1))
    val_idx, train_idx = rest[:k], rest[k:]
    parts = {s: PathfinderImages(folder, [entries[i] for i in idx.tolist()], size, tokens)
             for s, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    if materialize is None:
        materialize = len(entries) * size * size <= 1 << 23
    if materialize:
        parts = {s: d.materialize() if len(d) else d for s, d in parts.items()}
    info = TaskInfo(name=name, d_input=256 if tokens else 1, d_output=2, length=size * size, kind="classification",
                    input_kind="tokens" if tokens else "real", citation=PATHFINDER_CITATION)
    return TaskData(info=info, train=parts["train"], val=parts["val"] if len(parts["val"]) else None,
                    test=parts["test"], extra={"folder": str(folder)})


@register_task("pathfinder", "LRA Pathfinder: are two markers connected by a dashed contour; 32x32 -> L=1024")
def build_pathfinder(data_dir=None, seed: int = 0, resolution: int = 32, generate: bool = False,
                     n_images: int = 2000, tokens: bool = False, materialize: Optional[bool] = None,
                     num_workers: Optional[int] = None) -> TaskData:
    """Pathfinder at ``resolution`` (32, 64, 128 or 256). ``generate=True`` writes ``n_images`` images
    (into ``<data root>/pathfinder-gen-seed<seed>/``) when the official folder is missing."""
    if resolution not in (32, 64, 128, 256):
        raise ValueError(f"resolution must be 32, 64, 128 or 256; got {resolution!r}")
    return _build("pathfinder", resolution, data_dir, seed, generate, n_images, tokens, materialize, num_workers)


@register_task("pathx", "LRA Path-X: Pathfinder at 128x128 -> L=16384")
def build_pathx(data_dir=None, seed: int = 0, generate: bool = False, n_images: int = 2000, tokens: bool = False,
                materialize: Optional[bool] = None, num_workers: Optional[int] = None) -> TaskData:
    """Path-X = Pathfinder-128 (``curv_contour_length_14``)."""
    return _build("pathx", 128, data_dir, seed, generate, n_images, tokens, materialize, num_workers)
