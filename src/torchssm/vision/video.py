"""Moving-digits clips: long videos whose label is an event early in the clip (generated offline).

A clip has ``frames`` frames of a ``canvas`` x ``canvas`` grey canvas. A scikit-learn 8x8 digit (the
"base" digit) moves on it with constant velocity, bouncing off the borders, for the whole clip. At a
random time in the first ``event_window`` fraction of the clip, for ``event_frames`` frames, the base
digit is replaced by another digit of a different class and the canvas flashes (+``flash`` on every
pixel): the label is the class of that event digit. Everything after the event is distractor: a model
must find a handful of informative frames among hundreds or thousands and carry them to the end.

The images are scikit-learn's digits (the 1797 8x8 images shipped with the package, read offline by
``data/digits.py``); ``split`` "train" draws its digits from the first 80% of them, "test" from the rest,
so test clips show unseen digit images. Each clip is fixed by a few integers (``ClipSpecs``), drawn from
``seed``, cached atomically as .npz (``data/loaders.save_npz_atomic``) and rendered on demand, so a
thousand clips of a thousand frames cost kilobytes on disk and are identical for every run with the
same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DIGIT = 8  # side of a scikit-learn digit


@dataclass
class ClipSpecs:
    """One row per clip: digit image ids, start positions (row, col), velocities, event start."""

    base: np.ndarray  # (n,) index into the digit images
    event: np.ndarray  # (n,)
    start: np.ndarray  # (n, 2) int
    velocity: np.ndarray  # (n, 2) int in {-1, 1}
    event_start: np.ndarray  # (n,) int
    labels: np.ndarray  # (n,) class of the event digit


def _digit_pool(split: str):
    from torchssm.vision.data import digits_images

    images, labels = digits_images()  # (1797, 1, 8, 8) in [0, 1]
    cut = int(0.8 * len(images))
    if split == "train":
        return images[:cut, 0], labels[:cut]
    if split == "test":
        return images[cut:, 0], labels[cut:]
    raise ValueError(f"split must be 'train' or 'test'; got {split!r}")


def draw_specs(
    n: int, frames: int, canvas: int, event_window: float, event_frames: int, seed: int, split: str
) -> ClipSpecs:
    """The integers that fix ``n`` clips (numpy Generator seeded by (seed, split))."""
    _, labels = _digit_pool(split)
    labels = labels.numpy()
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    event = rng.integers(0, len(labels), n)
    base = np.empty(n, dtype=np.int64)
    for i in range(n):  # a base digit of another class than the event's
        choices = np.flatnonzero(labels != labels[event[i]])
        base[i] = choices[rng.integers(0, len(choices))]
    last_start = max(1, int(event_window * frames) - event_frames)
    return ClipSpecs(
        base=base,
        event=event,
        start=rng.integers(0, canvas - DIGIT + 1, (n, 2)),
        velocity=rng.choice(np.array([-1, 1]), (n, 2)),
        event_start=rng.integers(0, last_start, n),
        labels=labels[event],
    )


def bounce(start: torch.Tensor, velocity: torch.Tensor, frames: int, span: int) -> torch.Tensor:
    """Positions (n, frames, 2) of a point moving by ``velocity`` per frame in [0, span], reflecting
    at both ends (a triangle wave of period 2 span)."""
    t = torch.arange(frames)[None, :, None]  # (1, T, 1)
    if span == 0:
        return torch.zeros(start.shape[0], frames, 2, dtype=torch.long)
    x = (start[:, None, :] + velocity[:, None, :] * t) % (2 * span)  # (n, T, 2)
    return torch.where(x > span, 2 * span - x, x)


class MovingDigits(torch.utils.data.Dataset):
    """Clips (frames, canvas, canvas) float32 in [0, 1 + flash] and labels; see the module docstring.

    Args:
        n: number of clips. frames: clip length (hundreds to thousands). canvas: side (>= 8).
        event_window: the event starts in the first ``event_window`` of the clip (0.1).
        event_frames: how long the event lasts (4 frames). flash: brightness added during it (0.5).
        split: "train" or "test" (disjoint digit images). seed: fixes every clip.
        data_dir: where the clip specs are cached (``TORCHSSM_DATA`` / ~/.cache/torchssm by default);
            None with ``cache=False`` keeps them in memory only.
    """

    def __init__(
        self,
        n: int,
        frames: int = 512,
        canvas: int = 12,
        *,
        event_window: float = 0.1,
        event_frames: int = 4,
        flash: float = 0.5,
        split: str = "train",
        seed: int = 0,
        data_dir=None,
        cache: bool = True,
    ):
        for name, value, low in (
            ("n", n, 1),
            ("frames", frames, 2),
            ("canvas", canvas, DIGIT),
            ("event_frames", event_frames, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if not 0.0 < event_window <= 1.0 or event_frames >= event_window * frames:
            raise ValueError(
                f"the event ({event_frames} frames) must fit in the first event_window={event_window} "
                f"of {frames} frames"
            )
        self.frames, self.canvas, self.event_frames, self.flash = frames, canvas, event_frames, flash
        self.images, _ = _digit_pool(split)
        key = f"moving-digits-{split}-n{n}-T{frames}-c{canvas}-w{event_window}-e{event_frames}-seed{seed}.npz"
        self.specs = self._load_or_draw(
            key, data_dir, cache, n, frames, canvas, event_window, event_frames, seed, split
        )
        self.labels = torch.from_numpy(self.specs.labels)

    @staticmethod
    def _load_or_draw(key, data_dir, cache, *args) -> ClipSpecs:
        from torchssm.data.loaders import resolve_data_dir, save_npz_atomic

        path = resolve_data_dir(data_dir) / "moving_digits" / key if cache else None
        if path is not None and path.exists():
            with np.load(path) as z:
                return ClipSpecs(**{k: z[k] for k in z.files})
        specs = draw_specs(*args)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            save_npz_atomic(path, **specs.__dict__)
        return specs

    def __len__(self) -> int:
        return len(self.labels)

    def render(self, idx) -> torch.Tensor:
        """Clips ``idx`` (a list / tensor of indices): (len(idx), frames, canvas, canvas) float32."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).numpy()
        s = self.specs
        n, T, C = len(idx), self.frames, self.canvas
        pos = bounce(torch.from_numpy(s.start[idx]), torch.from_numpy(s.velocity[idx]), T, C - DIGIT)  # (n, T, 2)
        t = torch.arange(T)[None]  # (1, T)
        ev0 = torch.from_numpy(s.event_start[idx])[:, None]  # (n, 1)
        in_event = (t >= ev0) & (t < ev0 + self.event_frames)  # (n, T)
        base = self.images[torch.from_numpy(s.base[idx])]  # (n, 8, 8)
        event = self.images[torch.from_numpy(s.event[idx])]
        sprite = torch.where(in_event[..., None, None], event[:, None], base[:, None])  # (n, T, 8, 8)
        r = torch.arange(DIGIT)
        cells = (pos[..., 0, None, None] + r[:, None]) * C + (pos[..., 1, None, None] + r[None, :])  # (n, T, 8, 8)
        out = torch.zeros(n, T, C * C).scatter_(2, cells.reshape(n, T, -1), sprite.reshape(n, T, -1))
        out = out + self.flash * in_event[..., None].float()
        return out.reshape(n, T, C, C)

    def __getitem__(self, i: int) -> dict:
        return {"inputs": self.render([i])[0], "targets": self.labels[i]}

    def event_mask(self, idx) -> torch.Tensor:
        """(len(idx), frames) bool: the event frames (the informative tokens)."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).numpy()
        t = torch.arange(self.frames)[None]
        ev0 = torch.from_numpy(self.specs.event_start[idx])[:, None]
        return (t >= ev0) & (t < ev0 + self.event_frames)
