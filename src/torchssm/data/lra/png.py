"""A tiny PNG codec (zlib + struct, no dependency) for the Pathfinder images.

Reads 8-bit, non-interlaced PNGs of colour type 0 (grey), 2 (RGB), 4 (grey + alpha) and 6 (RGBA)
with any of the five row filters (PNG spec, ISO/IEC 15948, Sec. 9); colour images are converted
to grey with the ITU-R 601 luma weights (as PIL's ``convert("L")``). Writes 8-bit greyscale.
Other PNGs (16-bit, palette, interlaced) are read with Pillow when it is installed, and
:func:`read_png_gray` prefers Pillow anyway when it is importable (faster on filtered rows).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png_gray(image: np.ndarray) -> bytes:
    """(h, w) uint8 -> PNG bytes (colour type 0, filter 0 on every row)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (height, width) uint8 image; got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image], axis=1).tobytes()  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def write_png_gray(path: str | Path, image: np.ndarray) -> None:
    Path(path).write_bytes(encode_png_gray(image))


def _unfilter(data: bytes, h: int, w: int, bpp: int) -> np.ndarray:
    stride = w * bpp
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    pos = 0
    for y in range(h):
        ftype = data[pos]
        row = np.frombuffer(data, np.uint8, stride, pos + 1).astype(np.int32)
        pos += stride + 1
        if ftype == 0:
            cur = row
        elif ftype == 2:
            cur = (row + prev) & 0xFF
        elif ftype in (1, 3, 4):  # depend on the already decoded left neighbour: a Python loop
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                left = cur[x - bpp] if x >= bpp else 0
                up = prev[x]
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = (left + up) >> 1
                else:
                    ul = prev[x - bpp] if x >= bpp else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                cur[x] = (row[x] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {ftype} in row {y}")
        out[y] = cur
        prev = cur
    return out


def read_png_gray(path: str | Path) -> np.ndarray:
    """A PNG file -> (h, w) uint8 grey image (Pillow when installed: its row filters run in C)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return decode_png_gray(path)
    return _read_with_pillow(path)


def decode_png_gray(path: str | Path) -> np.ndarray:
    """The built-in decoder (no dependency) behind :func:`read_png_gray`."""
    blob = Path(path).read_bytes()
    if not blob.startswith(_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat.append(data)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: PNG without IHDR chunk")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 8 or ctype not in _CHANNELS or interlace:
        return _read_with_pillow(path)
    c = _CHANNELS[ctype]
    pix = _unfilter(zlib.decompress(b"".join(idat)), h, w, c).reshape(h, w, c)
    if ctype in (0, 4):
        return np.ascontiguousarray(pix[..., 0])
    rgb = pix[..., :3].astype(np.float64)
    # ITU-R 601-2 luma, rounded as PIL: L = R*299/1000 + G*587/1000 + B*114/1000
    return np.floor(rgb @ np.array([0.299, 0.587, 0.114]) + 0.5).clip(0, 255).astype(np.uint8)


def _read_with_pillow(path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError(f"{path}: PNG variant not supported by the built-in reader; install Pillow") from err
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)
