"""Atomic file output and image encoders.

Every file is first written under a hidden temporary name in its final directory and
then renamed with os.replace, so a reader never sees a half-written image even while a
generation is still running or after it was killed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hiseg_ros.atomic import atomic_write_bytes as _atomic_write_bytes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    # No fsync per image: the generator renames the whole dataset folder into place when done.
    _atomic_write_bytes(path, data, fsync=False)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: Path, rows: Iterable[Sequence], header: Sequence[str] | None = None) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _encode(ext: str, image: np.ndarray, params: Sequence[int] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise OSError(f"cv2 could not encode {ext}")
    return buf.tobytes()


def encode_png(array: np.ndarray) -> bytes:
    """PNG of an RGB uint8 image or a single-channel uint8 / uint16 map (kept at its bit depth)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return _encode(".png", array, (cv2.IMWRITE_PNG_COMPRESSION, 3))


def encode_jpg(rgb: np.ndarray, quality: int = 92) -> bytes:
    return _encode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, quality))


def encode_ppm(rgb: np.ndarray) -> bytes:
    """Binary PPM (P6), as the GTSDB images are stored."""
    data = _encode(".ppm", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not data.startswith(b"P6"):
        raise OSError("expected a binary (P6) PPM")
    return data


def encode_palette_png(indices: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> bytes:
    """8-bit palette ("P" mode) PNG: pixel values are indices, the palette only shows them."""
    img = Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8))
    flat = [c for rgb in palette for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    if img.mode != "P":
        raise ValueError(f"expected a palette image, got mode {img.mode}")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_gray_png(indices: np.ndarray) -> bytes:
    """8-bit single-channel ("L" mode) PNG."""
    return _encode(".png", np.ascontiguousarray(indices, dtype=np.uint8))
