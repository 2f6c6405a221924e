"""Pathfinder images the way the Pathfinder authors' ``snakes2`` generator draws them, with LRA's settings.

Source (re-implemented here, no code copied): drewlinsley/pathfinder at ab9c130 (2019-12-06, the
generator LRA used; Linsley et al. 2018, Kim*, Linsley* et al. 2020) - ``snakes2.py``
(``from_wrapper``, ``two_snakes``, ``initialize_two_seeds``, ``draw_circle``), ``snakes.py``
(``make_many_snakes``, ``make_snake``, ``seed_snake``, ``extend_snake``, ``get_coords_cmf``,
``draw_line_n_mask``, ``translate_coord``, ``flip_by_pi``, ``generate_dilation_struct``) and
``snakes2_wrapper.py`` (the ``Args`` defaults and the settings block the authors ran). LRA's
settings per resolution are listed in google-research/long-range-arena
``lra_benchmarks/data/pathfinder.py`` (docstrings of ``Pathfinder32`` .. ``Pathfinder256``);
:func:`lra_settings` cites each one.

One image (``from_wrapper``):

1. Two target contours ("snakes") of ``contour_length`` paddles grow from two seed paddles:
   seed A's tail is uniform among the free pixels of the central square left by a band of
   2 ``seed_distance`` px at every edge; seed B's tail lies ``seed_distance`` px from A's in a
   uniform direction. The contours then grow one paddle at a time, A then B, 13 times.
2. Growth (``extend_snake``): the next paddle's pivot is ``paddle_length + 2 margin`` px ahead of
   the last pivot; its far end is drawn from the pixels on the circle of radius
   ``paddle_length + margin`` around the pivot (one sample per pixel of arc, truncated to
   integers, duplicates removed) with weight ``(1 - mask dilated by margin) *
   cos(min(continuity * |turn|, pi/2))^2`` - a turn of 90 degrees or more is impossible, and
   pixels near other paddles are avoided. A paddle whose mask would overlap the occupied mask
   (sum >= 1.8) is redrawn, at most ``max_paddle_retrial + 1`` times; a contour that cannot grow
   makes the whole image restart. The paddle just drawn joins the occupied mask only when the
   next one is accepted, and target A's last paddle never does (as in ``two_snakes``).
3. ``num_distractor_snakes`` distractor contours of ``distractor_length`` paddles grow the same
   way from seeds anywhere (``seed_snake``: a uniform free pixel where the seed paddle's mask
   fits); one that fails ``max_distractor_contour_retrial + 1`` times is left out.
4. Label 1: markers on both ends of one target contour; label 0: on the start of one and the end
   of the other (``from_wrapper``: ``origin_mark_idx``). Both targets start 7 px apart, so the
   distance between the markers carries almost no label information.
5. Rendering (``draw_line_n_mask``, ``draw_circle``): every paddle is a Pillow ``ImageDraw.line``
   of width ``round(paddle_thickness * antialias_scale)`` drawn ``antialias_scale`` times larger,
   resized down with Pillow's Lanczos filter on 8-bit images (as ``scipy.misc.imresize`` did),
   scaled by its contrast and composited with ``max``; targets have contrast
   ``snake_contrast * paddle_contrast``, distractors ``snake_contrast``. A paddle's collision
   mask is the same line dilated by a disk of radius ``margin * antialias_scale`` first. Markers
   are disks of radius ``marker_radius`` drawn and resized the same way. ``scipy.misc.imsave``
   finally stretched the image to 0..255 (``bytescale``: divide by the maximum, round).

The Lanczos resize is Pillow's fixed-point 8-bit resampler (``precompute_coeffs``,
``normalize_coeffs_8bpc``, horizontal then vertical pass), and a width-1 line is Pillow's
Bresenham line plus its end point: both reproduce Pillow exactly (tested against Pillow when it
is installed). Wider lines (``paddle_thickness * antialias_scale`` > 1: Pathfinder-64 and up)
fill Pillow's wide-line quadrilateral with a simpler rule than Pillow's polygon filler (about
10-17% of the line's pixels differ from Pillow 13: UNVERIFIED pixel for pixel).
``use_single_paddles`` (isolated paddles filling the image) is off, as in the authors'
``snakes2_wrapper.py`` settings block. Not reproduced: the original's random streams (numpy's
global RNG, unknown seeds), so these are images from the same distribution, not the released images.

Speed: every paddle and mask patch depends only on the integer end-point offset of its enlarged
line, so they are precomputed once per setting; the growth loop runs in numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from numba import njit

_PRECISION_BITS = 22  # Pillow's fixed-point resampling precision for 8-bit images (Resample.c)


@dataclass(frozen=True)
class SnakesSettings:
    """The ``snakes2`` options that shape an image (names as in ``snakes2_wrapper.py``'s ``Args``)."""

    size: int
    padding: int
    contour_length: int
    distractor_length: int
    num_distractor_snakes: int
    paddle_length: int
    paddle_thickness: float
    paddle_margins: tuple[int, ...]
    continuity: float
    seed_distance: int
    marker_radius: float
    antialias_scale: int
    snake_contrast: float
    paddle_contrast: float
    max_paddle_retrial: int = 2
    max_distractor_contour_retrial: int = 4


# snakes2_wrapper.py's Args defaults for what LRA's settings leave unset
_ARGS_DEFAULTS = {
    "padding": 22,
    "paddle_length": 5,
    "seed_distance": 27,
    "paddle_contrast": 1.0,
    "max_paddle_retrial": 2,
    "max_distractor_contour_retrial": 4,
}
_DISTRACTOR_LENGTH = 14 // 3  # args.distractor_length = args.contour_length / 3 (integer division)
# lra_benchmarks/data/pathfinder.py, the Pathfinder<size> docstrings ("N // distractor_length" distractors)
_LRA = {
    32: {
        "padding": 1,
        "paddle_length": 2,
        "paddle_thickness": 0.5,
        "paddle_margins": (1,),
        "continuity": 1.0,
        "seed_distance": 7,
        "marker_radius": 1.5,
        "snake_contrast": 2.0,
        "paddle_contrast": 0.75,
        "num_distractor_snakes": 20 // _DISTRACTOR_LENGTH,
    },
    64: {
        "padding": 1,
        "paddle_thickness": 1.0,
        "paddle_margins": (1,),
        "continuity": 1.8,
        "seed_distance": 12,
        "marker_radius": 2.5,
        "snake_contrast": 0.8,
        "num_distractor_snakes": 22 // _DISTRACTOR_LENGTH,
    },
    128: {
        "padding": 1,
        "paddle_thickness": 1.5,
        "paddle_margins": (2, 3),
        "continuity": 1.8,
        "seed_distance": 20,
        "marker_radius": 3.0,
        "snake_contrast": 0.9,
        "num_distractor_snakes": 35 // _DISTRACTOR_LENGTH,
    },
    256: {
        "paddle_thickness": 2.0,
        "paddle_margins": (3,),
        "continuity": 1.8,
        "marker_radius": 5.0,
        "snake_contrast": 1.0,
        "num_distractor_snakes": 30 // _DISTRACTOR_LENGTH,
    },
}


def lra_settings(size: int) -> SnakesSettings:
    """LRA's Pathfinder settings at ``size`` (32, 64, 128, 256), set ``curv_contour_length_14``.

    Each value is the ``args.<name>`` line of the ``Pathfinder<size>`` docstring in
    long-range-arena ``lra_benchmarks/data/pathfinder.py``; a value it does not set is the
    default of ``Args`` in pathfinder ``snakes2_wrapper.py`` (``padding=22``, ``paddle_length=5``,
    ``seed_distance=27``, ``paddle_contrast_list=[1.]``, ``max_paddle_retrial=2``,
    ``max_distractor_contour_retrial=4``). All four set ``contour_length = 14`` and
    ``antialias_scale = 2`` (the later of two lines where it is set twice).
    ``distractor_length = contour_length / 3`` and ``num_distractor_snakes = N / distractor_length``
    were integer divisions (Python 2 code; the 32 px block writes ``//``): 14 // 3 = 4 paddles;
    20 // 4 = 5 (32 px), 22 // 4 = 5 (64), 35 // 4 = 8 (128), 30 // 4 = 7 (256) distractors.
    """
    if size not in _LRA:
        raise ValueError(f"LRA Pathfinder sizes are 32, 64, 128 and 256; got {size!r}")
    return SnakesSettings(
        size=size,
        contour_length=14,
        distractor_length=_DISTRACTOR_LENGTH,
        antialias_scale=2,
        **{**_ARGS_DEFAULTS, **_LRA[size]},
    )


# ----------------------------------------------------------------------------- Pillow-exact drawing


def _lanczos(x: float) -> float:
    """Pillow's Lanczos-3 kernel sinc(x) sinc(x / 3) on [-3, 3)."""
    if not -3.0 <= x < 3.0:
        return 0.0

    def sinc(v: float) -> float:
        return 1.0 if v == 0.0 else math.sin(math.pi * v) / (math.pi * v)

    return sinc(x) * sinc(x / 3.0)


@cache
def resize_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) int64 fixed-point Lanczos weights of Pillow's 8-bit resampler."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    weights = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        w = [_lanczos((x - center + 0.5) / filterscale) for x in range(lo, hi)]
        total = sum(w)
        for x, wx in zip(range(lo, hi), w):
            k = wx / total if total != 0.0 else wx
            weights[xx, x] = int(k * (1 << _PRECISION_BITS) + (0.5 if k >= 0 else -0.5))  # C cast truncates
    return weights


def resize_lanczos_u8(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Pillow ``Image.resize(..., LANCZOS)`` of an (h, w) uint8 image: horizontal pass, then vertical."""
    half = 1 << (_PRECISION_BITS - 1)
    kh = resize_coefficients(image.shape[1], out_shape[1])  # (w_out, w)
    kv = resize_coefficients(image.shape[0], out_shape[0])  # (h_out, h)
    rows = np.clip((image.astype(np.int64) @ kh.T + half) >> _PRECISION_BITS, 0, 255)  # (h, w_out)
    return np.clip((kv @ rows + half) >> _PRECISION_BITS, 0, 255).astype(np.uint8)  # (h_out, w_out)


def _round_half_up(f: float) -> int:  # Pillow draw.c ROUND_UP
    return int(math.floor(f + 0.5)) if f >= 0 else -int(math.floor(abs(f) + 0.5))


def _round_half_down(f: float) -> int:  # Pillow draw.c ROUND_DOWN
    return int(math.ceil(f - 0.5)) if f >= 0 else -int(math.ceil(abs(f) - 0.5))


def line_pixels(x0: int, y0: int, x1: int, y1: int, width: int) -> np.ndarray:
    """Pixels (k, 2) as (y, x) of Pillow's ``ImageDraw.line([(x0, y0), (x1, y1)], width=width)``.

    Width 1: Pillow's Bresenham (``draw.c`` ``line8``, which stops before the end point) plus the
    end point that ``_draw_lines`` adds - exact. Wider: the quadrilateral of ``draw.c``
    ``ImagingDrawWideLine`` (offsets (width - 1) / 2 rounded up on one side and down on the other),
    filled as the pixels whose centres lie in it; Pillow's polygon fill has its own edge rules, so
    this differs from Pillow 13 on 10-17% of the line's pixels for widths 2-4 (UNVERIFIED against
    the 2019 Pillow the data was made with).
    """
    if width > 1:
        dx, dy = x1 - x0, y1 - y0
        if dx == 0 and dy == 0:
            return np.array([[y0, x0]], dtype=np.int64)
        big, small = math.hypot(dx, dy), (width - 1) / 2.0
        r_max, r_min = _round_half_up(small) / big, _round_half_down(small) / big
        dxmin, dxmax = _round_half_down(r_min * dy), _round_half_down(r_max * dy)
        dymin, dymax = _round_half_down(r_min * dx), _round_half_down(r_max * dx)
        corners = np.array(
            [(x0 - dxmin, y0 + dymax), (x1 - dxmin, y1 + dymax), (x1 + dxmax, y1 - dymin), (x0 + dxmax, y0 - dymin)],
            dtype=np.float64,
        )  # (4, 2) as (x, y)
        lo, hi = corners.min(0).astype(int), corners.max(0).astype(int)
        ys, xs = np.mgrid[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
        sides = []
        for i in range(4):  # which side of each edge every pixel centre lies on
            (ax, ay), (bx, by) = corners[i], corners[(i + 1) % 4]
            sides.append((bx - ax) * (ys - ay) - (by - ay) * (xs - ax))
        sides = np.stack(sides)
        inside = (sides >= -1e-9).all(0) | (sides <= 1e-9).all(0)
        return np.stack([ys[inside], xs[inside]], -1)
    pts = []
    dx, xs = abs(x1 - x0), (1 if x1 >= x0 else -1)
    dy, ys = abs(y1 - y0), (1 if y1 >= y0 else -1)
    x, y = x0, y0
    if dx > dy:  # horizontal slope (dy == 0 included)
        e = 2 * dy - dx
        for _ in range(dx):
            pts.append((y, x))
            if e >= 0 and dy:
                y, e = y + ys, e - 2 * dx
            e, x = e + 2 * dy, x + xs
    else:  # vertical slope (dx == 0 included)
        e = 2 * dx - dy
        for _ in range(dy):
            pts.append((y, x))
            if e >= 0 and dx:
                x, e = x + xs, e - 2 * dy
            e, y = e + 2 * dx, y + ys
    pts.append((y1, x1))
    return np.array(pts, dtype=np.int64)


def _disk_offsets(radius: int) -> np.ndarray:
    """(k, 2) offsets with dy^2 + dx^2 <= radius^2 (``generate_dilation_struct``)."""
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[keep], dx[keep]], -1)


@dataclass(frozen=True)
class _Tables:
    """Everything the numba loop needs for one setting; axis m indexes ``paddle_margins``."""

    ints: np.ndarray  # see _int_params
    floats: np.ndarray  # continuity, target contrast, distractor contrast, marker radius
    margins: np.ndarray  # (n_m,)
    line: np.ndarray  # (n_m, 2R+1, 2R+1, s, s) paddle intensity in [0, 1] by enlarged end-point offset
    mask: np.ndarray  # (n_m, 2R+1, 2R+1, s, s) paddle collision mask in [0, 1]
    struct: np.ndarray  # (n_m, 2R+1, 2R+1, z, z) bool: seed placement structuring element
    ring_y: np.ndarray  # (n_m, n_ring) float offsets of the candidate circle
    ring_x: np.ndarray
    ring_n: np.ndarray  # (n_m,) samples on each circle
    kv: np.ndarray  # (size, size * aa) marker resize weights
    centres: np.ndarray  # (n_m,) centre of the enlarged paddle patch, (L + ceil(thickness) + margin) * aa
    disk_small: np.ndarray  # (n_m, k, 3): dy, dx, valid - the "mask dilated by margin" disk


@lru_cache(maxsize=8)
def tables(settings: SnakesSettings) -> _Tables:
    """Precomputed paddles, masks, seed structs and candidate circles for ``settings``."""
    st, aa, L = settings, settings.antialias_scale, settings.paddle_length
    width = int(round(st.paddle_thickness * aa))
    if width != st.paddle_thickness * aa:
        raise ValueError(
            "paddle_thickness * antialias_scale must be an integer (snakes.py: 'thickness does not "
            f"break even'); got {st.paddle_thickness} * {aa}"
        )
    R = L * aa  # enlarged paddle length: end-point offsets lie in [-R, R]
    n_m = len(st.paddle_margins)
    halves = [L + math.ceil(st.paddle_thickness) + m for m in st.paddle_margins]
    s = 2 * max(halves) + 1
    z = 2 * (L + max(st.paddle_margins)) + 1
    line = np.zeros((n_m, 2 * R + 1, 2 * R + 1, s, s))
    mask = np.zeros_like(line)
    struct = np.zeros((n_m, 2 * R + 1, 2 * R + 1, z, z), dtype=np.bool_)
    for mi, (m, half) in enumerate(zip(st.paddle_margins, halves)):
        big, small = 2 * half * aa + 1, 2 * half + 1
        c = half * aa  # the enlarged patch's centre = the paddle's start
        dil = _disk_offsets(m * aa)
        off = (s - small) // 2  # patches of smaller margins sit centred in the common size s
        for hy in range(-R, R + 1):
            for hx in range(-R, R + 1):
                canvas = np.zeros((big, big), dtype=np.uint8)
                pix = line_pixels(c, c, c + hx, c + hy, width)
                canvas[pix[:, 0], pix[:, 1]] = 255
                dilated = np.zeros_like(canvas)
                for dy, dx in dil:  # grey dilation (cv2.dilate) of the enlarged line
                    dilated = np.maximum(dilated, np.roll(np.roll(canvas, dy, 0), dx, 1))
                lp = resize_lanczos_u8(canvas, (small, small)) / 255.0
                mp = resize_lanczos_u8(dilated, (small, small)) / 255.0
                line[mi, hy + R, hx + R, off : off + small, off : off + small] = lp
                mask[mi, hy + R, hx + R, off : off + small, off : off + small] = mp
                # seed_snake: the mask drawn from struct_head = L+m+1 in a (2(L+m)+1)^2 image, kept where it is
                # exactly 1 (``struct.astype(np.uint8)``), applied by cv2.dilate with the anchor at the centre
                zs, head = 2 * (L + m) + 1, L + m + 1
                zoff = (z - zs) // 2
                for i in range(zs):
                    for j in range(zs):
                        pi_, pj = i - head + half, j - head + half
                        if 0 <= pi_ < small and 0 <= pj < small and mp[pi_, pj] == 1.0:
                            struct[mi, hy + R, hx + R, zoff + i, zoff + j] = True
    ring_lists = []
    for m in st.paddle_margins:
        step = L + m  # get_coords_cmf: one sample per pixel of arc on the circle of radius L + m
        deg_per_pixel = 360.0 / (2 * step * np.pi)
        rad = np.arange(0, 360, deg_per_pixel) * np.pi / 180
        ring_lists.append((step * np.sin(rad), step * np.cos(rad)))
    n_ring = max(len(r[0]) for r in ring_lists)
    ring_y, ring_x = np.zeros((n_m, n_ring)), np.zeros((n_m, n_ring))
    for mi, (ry, rx) in enumerate(ring_lists):
        ring_y[mi, : len(ry)], ring_x[mi, : len(rx)] = ry, rx
    disks = [_disk_offsets(m) for m in st.paddle_margins]
    disk_small = np.zeros((n_m, max(len(d) for d in disks), 3), dtype=np.int64)
    for mi, d in enumerate(disks):
        disk_small[mi, : len(d), :2], disk_small[mi, : len(d), 2] = d, 1
    ints = np.array(
        [
            st.size,
            st.padding,
            st.seed_distance,
            L,
            st.contour_length,
            st.distractor_length,
            st.num_distractor_snakes,
            st.max_paddle_retrial,
            st.max_distractor_contour_retrial,
            aa,
            R,
        ],
        dtype=np.int64,
    )
    floats = np.array([st.continuity, st.snake_contrast * st.paddle_contrast, st.snake_contrast, st.marker_radius])
    return _Tables(
        ints=ints,
        floats=floats,
        margins=np.array(st.paddle_margins, dtype=np.int64),
        line=line,
        mask=mask,
        struct=struct,
        ring_y=ring_y,
        ring_x=ring_x,
        ring_n=np.array([len(r[0]) for r in ring_lists], dtype=np.int64),
        kv=resize_coefficients(st.size * aa, st.size),
        disk_small=disk_small,
        centres=np.array([h * aa for h in halves], dtype=np.int64),
    )


# ----------------------------------------------------------------------------- the growth loop (numba)


@njit(cache=True)
def _offset_index(angle, R, c):
    """Index of the enlarged line's end point, ``translate_coord([c, c], angle, R)`` - c (rounded up),
    for the enlarged patch centre c."""
    return int(math.ceil(c + R * math.sin(angle))) - c + R, int(math.ceil(c + R * math.cos(angle))) - c + R


@njit(cache=True)
def _flip(angle):
    return angle + math.pi if angle < 0 else angle - math.pi


@njit(cache=True)
def _stamp(canvas, patch, cy, cx, scale):
    """canvas = max(canvas, scale * patch centred at (cy, cx)), clipped to the canvas."""
    half = patch.shape[0] // 2
    H, W = canvas.shape
    for y in range(max(cy - half, 0), min(cy + half, H - 1) + 1):
        for x in range(max(cx - half, 0), min(cx + half, W - 1) + 1):
            v = scale * patch[y - cy + half, x - cx + half]
            if v > canvas[y, x]:
                canvas[y, x] = v


@njit(cache=True)
def _overlaps(mask, patch, cy, cx):
    """``np.max(mask + m_im) >= 1.8`` for the patch m_im centred at (cy, cx)."""
    half = patch.shape[0] // 2
    H, W = mask.shape
    for y in range(max(cy - half, 0), min(cy + half, H - 1) + 1):
        for x in range(max(cx - half, 0), min(cx + half, W - 1) + 1):
            if mask[y, x] + patch[y - cy + half, x - cx + half] >= 1.8:
                return True
    return False


@njit(cache=True)
def _extend(
    image,
    mask,
    snake,
    contrast,
    mi,
    margin,
    cb,
    T_line,
    T_mask,
    ring_y,
    ring_x,
    ring_n,
    disk,
    ints,
    continuity,
    cand,
    cmf,
    orient,
):
    """``extend_snake`` in place. ``snake`` = [pivot y, pivot x, angle, last patch ky, kx, y, x, tip y, x]
    (float64). Returns False on a dead end (the caller restarts the contour or the image)."""
    H, L, retrials, R = ints[0], ints[3], ints[7], ints[10]
    angle = snake[2]
    py = int(math.ceil(snake[0] + (L + 2 * margin) * math.sin(angle)))
    px = int(math.ceil(snake[1] + (L + 2 * margin) * math.cos(angle)))
    n = 0
    for i in range(ring_n[mi]):  # get_coords_cmf: candidate far ends on the circle, as integers, unique
        fy, fx = py + ring_y[mi, i], px + ring_x[mi, i]
        if fy >= H or fy < 0 or fx >= H or fx < 0:
            continue
        iy, ix = int(fy), int(fx)
        seen = False
        for j in range(n):
            if cand[j, 0] == iy and cand[j, 1] == ix:
                seen = True
                break
        if not seen:
            cand[n, 0], cand[n, 1] = iy, ix
            n += 1
    if n == 0:
        return False
    total = 0.0
    for j in range(n):
        o = math.atan2(cand[j, 0] - py, cand[j, 1] - px)
        d = abs(o - angle)
        d = min(min(d, 2 * math.pi - d) * continuity, 0.5 * math.pi)
        w = max(math.cos(d), 0.0) ** 2
        dil = 0.0  # the mask dilated by the margin disk (cv2.dilate), at the candidate
        for k in range(disk.shape[0]):
            if disk[k, 2] == 1:
                yy, xx = cand[j, 0] + disk[k, 0], cand[j, 1] + disk[k, 1]
                if 0 <= yy < H and 0 <= xx < H and mask[yy, xx] > dil:
                    dil = mask[yy, xx]
        total += (1.0 - dil) * w
        cmf[j] = total
        orient[j] = o
    if total < 1e-4:
        return False
    for _trial in range(retrials + 1):
        r = np.random.random() * total
        pick = 0
        for j in range(n):
            if cmf[j] > r:
                pick = j
                break
        ky, kx = _offset_index(_flip(orient[pick]), R, cb)
        hy, hx = cand[pick, 0], cand[pick, 1]
        if not _overlaps(mask, T_mask[mi, ky, kx], hy, hx):
            _stamp(image, T_line[mi, ky, kx], hy, hx, contrast)
            _stamp(mask, T_mask[mi, int(snake[3]), int(snake[4])], int(snake[5]), int(snake[6]), 1.0)
            snake[0], snake[1], snake[2] = py, px, orient[pick]
            snake[3], snake[4], snake[5], snake[6] = ky, kx, hy, hx
            snake[7], snake[8] = hy, hx
            return True
    return False


@njit(cache=True)
def _seed(image, mask, snake, contrast, mi, margin, cb, T_line, T_struct, ints, band, stop, avail, offsets):
    """``seed_snake`` (band = 1: a one-pixel frame) or the first target seed (band = 2 seed_distance).

    Returns 1 on success, 0 if out of room (no retry), -1 if every try left the image."""
    H, L, retrials, R = ints[0], ints[3], ints[7], ints[10]
    z = T_struct.shape[3]
    a = z // 2
    if stop > 0.0:
        free = 0
        for y in range(H):
            for x in range(H):
                if mask[y, x] <= 0.3:
                    free += 1
        if free < stop * H * H:
            return 0
    for _trial in range(retrials + 1):
        angle = np.random.randint(-180, 180) * math.pi / 180
        ky, kx = _offset_index(angle, R, cb)
        st = T_struct[mi, ky, kx]
        n_off = 0
        for i in range(z):  # the structuring element's offsets from its anchor (cv2.dilate: not mirrored)
            for j in range(z):
                if st[i, j]:
                    offsets[n_off, 0], offsets[n_off, 1] = i - a, j - a
                    n_off += 1
        # Offsets that leave the image are ignored (cv2.dilate's border): a pixel is free when every
        # offset that stays inside lands outside the band on a free pixel.
        n = 0
        if band > 2 * a and n_off > 0 and ints[1] <= band:
            # First target seed (fresh image, the padding inside the band): an interior pixel is free iff
            # every offset lands in the central square [band, H - band)^2 - a rectangle; a pixel near the
            # edge only if all its offsets leave the image. Same set as the scan below, found faster.
            oy0, oy1 = offsets[:n_off, 0].min(), offsets[:n_off, 0].max()
            ox0, ox1 = offsets[:n_off, 1].min(), offsets[:n_off, 1].max()
            y0, x0 = band - oy0, band - ox0
            rows, cols = max(H - band - oy1 - y0, 0), max(H - band - ox1 - x0, 0)
            for y in range(H):
                edge_row = y < a or y >= H - a
                for x in range(H):
                    if not (edge_row or x < a or x >= H - a):
                        continue
                    outside = True
                    for k in range(n_off):
                        yy, xx = y + offsets[k, 0], x + offsets[k, 1]
                        if 0 <= yy < H and 0 <= xx < H:
                            outside = False
                            break
                    if outside:
                        avail[n, 0], avail[n, 1] = y, x
                        n += 1
            if rows * cols + n == 0:
                return 0
            pick = np.random.randint(0, rows * cols + n)
            if pick < rows * cols:
                ty, tx = y0 + pick // cols, x0 + pick % cols
            else:
                ty, tx = avail[pick - rows * cols, 0], avail[pick - rows * cols, 1]
        else:
            for y in range(H):
                for x in range(H):
                    blocked = False
                    for k in range(n_off):
                        yy, xx = y + offsets[k, 0], x + offsets[k, 1]
                        if 0 <= yy < H and 0 <= xx < H:
                            if yy < band or yy >= H - band or xx < band or xx >= H - band or mask[yy, xx] > 0.3:
                                blocked = True
                                break
                    if not blocked:
                        avail[n, 0], avail[n, 1] = y, x
                        n += 1
            if n == 0:
                return 0
            pick = np.random.randint(0, n)
            ty, tx = avail[pick, 0], avail[pick, 1]
        hy = int(math.ceil(ty + L * math.sin(angle)))
        hx = int(math.ceil(tx + L * math.cos(angle)))
        rev = _flip(angle)
        qy = int(math.ceil(hy + (L + margin) * math.sin(rev)))
        qx = int(math.ceil(hx + (L + margin) * math.cos(rev)))
        if 0 <= hy < H and 0 <= hx < H and 0 <= qy < H and 0 <= qx < H:
            _stamp(image, T_line[mi, ky, kx], ty, tx, contrast)
            snake[0], snake[1], snake[2] = qy, qx, angle
            snake[3], snake[4], snake[5], snake[6] = ky, kx, ty, tx
            snake[7], snake[8] = ty, tx
            return 1
    return -1


@njit(cache=True)
def _second_seed(image, snake, first, contrast, mi, margin, cb, T_line, ints):
    """Target B's seed: ``seed_distance`` px from A's tail in a uniform direction (``initialize_two_seeds``)."""
    H, sd, L, retrials, R = ints[0], ints[2], ints[3], ints[7], ints[10]
    for _trial in range(retrials + 1):
        angle = np.random.randint(-180, 180) * math.pi / 180
        rev = _flip(angle)
        a = np.random.randint(0, 360) * math.pi / 180
        ty = int(np.round(first[7] + sd * math.sin(a)))
        tx = int(np.round(first[8] + sd * math.cos(a)))
        hy = int(math.ceil(ty + L * math.sin(angle)))
        hx = int(math.ceil(tx + L * math.cos(angle)))
        qy = int(math.ceil(hy + (L + margin) * math.sin(rev)))
        qx = int(math.ceil(hx + (L + margin) * math.cos(rev)))
        if 0 <= hy < H and 0 <= hx < H and 0 <= qy < H and 0 <= qx < H:
            ky, kx = _offset_index(angle, R, cb)
            _stamp(image, T_line[mi, ky, kx], ty, tx, contrast)
            snake[0], snake[1], snake[2] = qy, qx, angle
            snake[3], snake[4], snake[5], snake[6] = ky, kx, ty, tx
            snake[7], snake[8] = ty, tx
            return True
    return False


@njit(cache=True)
def _draw_markers(image, ys, xs, radius, aa, kv):
    """max(image, Lanczos-resized disks of ``radius`` at (ys[k], xs[k]) drawn ``aa`` times larger)."""
    H = image.shape[0]
    big = H * aa
    r2 = (radius * aa) ** 2
    reach = int(math.ceil(radius * aa))
    half = 1 << 21
    marks = np.zeros((H, H))
    for k in range(len(ys)):
        cy, cx = ys[k] * aa, xs[k] * aa  # draw_circle: the disk centre on the enlarged grid
        i0, i1 = max(cy - reach, 0), min(cy + reach, big - 1)
        j0, j1 = max(cx - reach, 0), min(cx + reach, big - 1)
        rows = np.zeros((i1 - i0 + 1, H), dtype=np.int64)  # horizontal pass (clipped to 8 bits); other rows are 0
        for i in range(i0, i1 + 1):
            for xx in range(H):
                acc = half
                for j in range(j0, j1 + 1):
                    if (i - cy) ** 2 + (j - cx) ** 2 <= r2:
                        acc += 255 * kv[xx, j]
                rows[i - i0, xx] = min(max(acc >> 22, 0), 255)
        for yy in range(H):  # vertical pass
            for xx in range(H):
                acc = half
                for i in range(i0, i1 + 1):
                    acc += kv[yy, i] * rows[i - i0, xx]
                v = min(max(acc >> 22, 0), 255) / 255.0
                if v > marks[yy, xx]:
                    marks[yy, xx] = v
    for y in range(H):
        for x in range(H):
            if marks[y, x] > image[y, x]:
                image[y, x] = marks[y, x]


@njit(cache=True)
def _draw(
    seed, label, ints, floats, margins, centres, T_line, T_mask, T_struct, ring_y, ring_x, ring_n, disk_small, kv
):
    """One image: (uint8 (H, H), marker rows (2,), marker cols (2,), paddle margin, number of restarts)."""
    np.random.seed(seed)
    H, padding, sd = ints[0], ints[1], ints[2]
    contour, d_len, n_dis, dis_retrials, aa = ints[4], ints[5], ints[6], ints[8], ints[9]
    continuity, c_target, c_distractor, radius = floats[0], floats[1], floats[2], floats[3]
    n_ring = ring_y.shape[1]
    cand = np.zeros((n_ring, 2), dtype=np.int64)
    cmf, orient = np.zeros(n_ring), np.zeros(n_ring)
    avail = np.zeros((H * H, 2), dtype=np.int64)
    offsets = np.zeros((T_struct.shape[3] ** 2, 2), dtype=np.int64)
    a, b, d = np.zeros(9), np.zeros(9), np.zeros(9)
    mi = np.random.randint(0, len(margins))  # from_wrapper: one paddle margin per image
    margin, cb, disk = margins[mi], centres[mi], disk_small[mi]
    restarts = -1
    while True:  # two_snakes until both targets grow to full length
        restarts += 1
        image = np.zeros((H, H))
        mask = np.zeros((H, H))
        for y in range(H):  # initialize_two_seeds: the padding frame is occupied
            for x in range(H):
                if y < padding or y >= H - padding or x < padding or x >= H - padding:
                    mask[y, x] = 1.0
        if _seed(image, mask, a, c_target, mi, margin, cb, T_line, T_struct, ints, 2 * sd, 0.0, avail, offsets) != 1:
            continue
        if not _second_seed(image, b, a, c_target, mi, margin, cb, T_line, ints):
            continue
        origins = np.array([[a[7], a[8]], [b[7], b[8]]])
        ok = True
        for _seg in range(contour - 1):
            for snake in (a, b):
                if ok and not _extend(
                    image,
                    mask,
                    snake,
                    c_target,
                    mi,
                    margin,
                    cb,
                    T_line,
                    T_mask,
                    ring_y,
                    ring_x,
                    ring_n,
                    disk,
                    ints,
                    continuity,
                    cand,
                    cmf,
                    orient,
                ):
                    ok = False
        if ok:
            break
    _stamp(mask, T_mask[mi, int(b[3]), int(b[4])], int(b[5]), int(b[6]), 1.0)  # B's last paddle (not A's)
    for _k in range(n_dis):  # make_many_snakes: distractors, each retried, left out if it never fits
        for _try in range(dis_retrials + 1):
            img2, mask2 = image.copy(), mask.copy()
            if (
                _seed(img2, mask2, d, c_distractor, mi, margin, cb, T_line, T_struct, ints, 1, 0.01, avail, offsets)
                != 1
            ):
                continue
            grown = True
            for _seg in range(d_len - 1):
                if grown and not _extend(
                    img2,
                    mask2,
                    d,
                    c_distractor,
                    mi,
                    margin,
                    cb,
                    T_line,
                    T_mask,
                    ring_y,
                    ring_x,
                    ring_n,
                    disk,
                    ints,
                    continuity,
                    cand,
                    cmf,
                    orient,
                ):
                    grown = False
            if grown:
                _stamp(mask2, T_mask[mi, int(d[3]), int(d[4])], int(d[5]), int(d[6]), 1.0)
                image, mask = img2, mask2
                break
    origin = np.random.randint(0, 2)  # from_wrapper: which target carries the first marker
    terminal = origin if label == 1 else 1 - origin
    ends = np.array([[a[7], a[8]], [b[7], b[8]]])
    ys = np.array([int(origins[origin, 0]), int(ends[terminal, 0])])
    xs = np.array([int(origins[origin, 1]), int(ends[terminal, 1])])
    _draw_markers(image, ys, xs, radius, aa, kv)
    lo, hi = image.min(), image.max()  # scipy.misc.imsave -> bytescale to 0..255, rounded
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    out = np.empty((H, H), dtype=np.uint8)
    for y in range(H):
        for x in range(H):
            out[y, x] = int(min(max((image[y, x] - lo) * scale, 0.0), 255.0) + 0.5)
    return out, ys, xs, margin, restarts


def image_seed(seed: int, index: int) -> int:
    """The 32-bit seed of image ``index`` of the data set ``seed`` (independent of any other image)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def draw_snakes(settings: SnakesSettings, seed: int, index: int, label: int):
    """Image ``index`` of the data set ``seed`` with ``label``: ((H, H) uint8, markers (2, 2) as (y, x),
    the paddle margin drawn for it)."""
    t = tables(settings)
    img, ys, xs, margin, _ = _draw(
        image_seed(seed, index),
        int(label),
        t.ints,
        t.floats,
        t.margins,
        t.centres,
        t.line,
        t.mask,
        t.struct,
        t.ring_y,
        t.ring_x,
        t.ring_n,
        t.disk_small,
        t.kv,
    )
    return img, np.stack([ys, xs], -1), int(margin)
